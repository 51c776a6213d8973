"""No import cycle between the project's modules (``simpo/``, ``data/``, ``callbacks/``), counting imports made only
for type checking and imports inside functions: the layers contract of ``pyproject.toml`` (``lint-imports``) checks
imports between layers, this checks every module against every other, inside a layer too."""

from __future__ import annotations

import grimp


def cycles(graph: grimp.ImportGraph) -> set[tuple[str, ...]]:
    """Each import ``a -> b`` for which ``b`` leads back to ``a``, as the chain ``a -> b -> ... -> a``."""
    found = set()
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                found.add((module, *back))
    return found


def test_no_module_imports_itself_back():
    graph = grimp.build_graph("simpo", "data", "callbacks", exclude_type_checking_imports=False)
    assert len(graph.modules) > 50  # the packages were found
    assert cycles(graph) == set()


def test_a_cycle_is_found(tmp_path, monkeypatch):
    """The check above can fail: two modules of a package that import each other, one for type checking only."""
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic import b\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cyclic import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclic", exclude_type_checking_imports=False, cache_dir=None)
    assert cycles(graph) == {("cyclic.a", "cyclic.b", "cyclic.a"), ("cyclic.b", "cyclic.a", "cyclic.b")}
