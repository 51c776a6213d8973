"""The GPU session's preflight: run by ``run.sh`` right after it installed the carried wheels, before the first check.

    python benchmarks/gpu/preflight.py OUT [--install-log FILE] [--result FILE]

1. prints the version of every distribution the checks lean on, the image's own ones first (torch, transformers,
   peft, pyarrow, fsspec, pandas: the carried ``datasets`` is installed ``--no-deps`` against them);
2. prints each requirement of those distributions that what is installed does not meet (``datasets`` asks for
   ``pyarrow>=...``): a warning, since the import decides;
3. imports every package the checks need, then every top-level module of each wheel ``run.sh`` installed (the
   lines ``<dist> <version>: installed`` of its install log), and prints where each came from.

The first import that fails stops the session at once: one line naming the package and the error, then
``OUT/report.md`` and ``OUT/report.json`` saying so (``preflight.status`` is ``failed``) and exit status 2, so the
one device call returns that line instead of every check dying on the same import. On success the findings go to
``--result`` (``run_checks.py`` puts them in the report) and the exit status is 0.

The standard library only at the top: this file must run before anything is known to import.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

# The image's own distributions that the carried ones depend on, then the carried ones, then the rest the checks use.
IMAGE = ("torch", "transformers", "tokenizers", "lightning", "peft", "pyarrow", "fsspec", "pandas", "numpy")
CARRIED = ("hydra-core", "omegaconf", "antlr4-python3-runtime", "datasets", "dill", "multiprocess", "llama-models",
           "bitsandbytes")  # fmt: skip
OTHERS = ("safetensors", "tiktoken", "huggingface-hub", "jinja2", "tqdm", "triton", "flash-attn")
# What the checks import (import name, distribution), in an order where a failure names the root cause: torch before
# what is built on it, pyarrow and fsspec before datasets.
NEEDED = (
    ("torch", "torch"),
    ("numpy", "numpy"),
    ("pyarrow", "pyarrow"),
    ("fsspec", "fsspec"),
    ("pandas", "pandas"),
    ("safetensors", "safetensors"),
    ("tokenizers", "tokenizers"),
    ("tiktoken", "tiktoken"),
    ("jinja2", "jinja2"),
    ("transformers", "transformers"),
    ("lightning", "lightning"),
    ("peft", "peft"),
    ("omegaconf", "omegaconf"),
    ("hydra", "hydra-core"),
    ("dill", "dill"),
    ("multiprocess", "multiprocess"),
    ("datasets", "datasets"),
    ("llama_models", "llama-models"),
)


def versions(dists: tuple[str, ...] = IMAGE + CARRIED + OTHERS) -> dict[str, str | None]:
    """{distribution: installed version, or None when absent}, with ``python`` first."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for dist in dists:
        try:
            found[dist] = md.version(dist)
        except md.PackageNotFoundError:
            found[dist] = None
    return found


def unmet_requirements(dists: tuple[str, ...]) -> list[str]:
    """Each ``Requires-Dist`` of the installed ``dists`` (extras left out) that the installed version of the required
    distribution does not satisfy, as ``"datasets needs pyarrow>=21.0.0, pyarrow 19.0.1 is installed"``; a
    requirement on a distribution that is absent is listed as such. Empty when ``packaging`` is not importable."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return []
    unmet = []
    for dist in dists:
        try:
            requires = md.requires(dist) or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            try:
                have = md.version(requirement.name)
            except md.PackageNotFoundError:
                unmet.append(f"{dist} needs {requirement}, {requirement.name} is not installed")
                continue
            if requirement.specifier and not requirement.specifier.contains(have, prereleases=True):
                unmet.append(f"{dist} needs {requirement}, {requirement.name} {have} is installed")
    return unmet


def installed_by_run_sh(install_log: Path | None) -> list[str]:
    """The distributions ``run.sh`` installed this time (its install log's ``<dist> <version>: installed`` lines)."""
    if install_log is None or not install_log.is_file():
        return []
    return [line.split()[0] for line in install_log.read_text().splitlines() if line.endswith(": installed")]


def top_level_modules(dist: str) -> list[str]:
    """The importable top-level modules of an installed distribution, from its ``top_level.txt`` or else from the
    paths its ``RECORD`` lists (a package folder, or a module file)."""
    distribution = md.distribution(dist)
    listed = distribution.read_text("top_level.txt")
    if listed:
        return sorted({name.strip() for name in listed.splitlines() if name.strip()})
    names = set()
    for path in distribution.files or []:
        first = path.parts[0]
        if first.endswith((".dist-info", ".data")) or first == "__pycache__" or first.startswith(".."):
            continue
        if len(path.parts) > 1 or first.endswith(".py"):
            names.add(first.removesuffix(".py"))
    return sorted(n for n in names if n.isidentifier())


def import_all(modules: list[tuple[str, str]]) -> tuple[dict[str, str], str | None]:
    """Import each (module, distribution) in order; returns {module: where it was loaded from} and the first
    failure as one line (``None`` when every import worked). Stops at the first failure."""
    loaded: dict[str, str] = {}
    for module, dist in modules:
        try:
            imported = importlib.import_module(module)
        except BaseException as error:  # SystemExit or a native library's error must be reported too
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
            return loaded, f"import {module} ({dist}) failed: {reason}"
        loaded[module] = str(getattr(imported, "__file__", None) or "built in")
    return loaded, None


def write_failure(out: Path, found: dict[str, Any]) -> None:
    """``OUT/report.json`` and ``OUT/report.md`` of a session stopped by its preflight (no check ran)."""
    out.mkdir(parents=True, exist_ok=True)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(), "preflight": found,
              "checks": {}}  # fmt: skip
    lines = [
        f"# GPU checks, {report['started']}: stopped by the preflight",
        "",
        f"**{found['reason']}**",
        "",
        "No check ran. Versions: " + ", ".join(f"{k} {v or 'absent'}" for k, v in found["versions"].items()) + ".",
    ]
    if found["unmet"]:
        lines += ["", "Requirements not met:", "", *(f"- {line}" for line in found["unmet"])]
    if found.get("wheels"):
        lines += ["", f"Carried wheels: {found['wheels']}"]
    texts = {"report.json": json.dumps(report, indent=1), "report.md": "\n".join(lines) + "\n"}
    for name, text in texts.items():
        path = out / name
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the session's output folder (a report is written there on failure)")
    parser.add_argument("--install-log", type=Path, default=os.environ.get("GPU_CHECKS_INSTALL_LOG"),
                        help="run.sh's install log (default $GPU_CHECKS_INSTALL_LOG)")  # fmt: skip
    parser.add_argument("--result", type=Path, default=None, help="where to write the findings as JSON")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    found: dict[str, Any] = {"versions": versions(), "status": "running"}
    print("preflight: " + ", ".join(f"{k} {v or 'absent'}" for k, v in found["versions"].items()), flush=True)
    found["unmet"] = unmet_requirements(IMAGE + CARRIED)
    for line in found["unmet"]:
        print(f"preflight: warning: {line}", flush=True)
    installed = installed_by_run_sh(args.install_log)
    if args.install_log is not None and args.install_log.is_file():
        found["wheels"] = args.install_log.read_text().strip().replace("\n", "; ")
    wanted = list(NEEDED)
    for dist in installed:
        try:
            wanted += [(module, dist) for module in top_level_modules(dist) if (module, dist) not in wanted]
        except md.PackageNotFoundError:
            found["reason"] = f"{dist} was installed but its metadata is not found on PYTHONPATH"
            break
    if "reason" not in found:
        found["imports"], found["reason"] = import_all(wanted)
    found["seconds"] = round(time.perf_counter() - started, 1)
    if found["reason"] is not None:
        found["status"] = "failed"
        print(f"preflight FAILED: {found['reason']}", flush=True)
        write_failure(args.out, found)
        return 2
    found["status"] = "ok"
    print(f"preflight: {len(found['imports'])} imports in {found['seconds']} s, "
          f"{len(installed)} carried wheel(s) installed and imported", flush=True)  # fmt: skip
    if args.result is not None:
        args.result.parent.mkdir(parents=True, exist_ok=True)
        args.result.write_text(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
