"""Every command the documentation shows composes, and every link between its pages leads somewhere.

The commands come from README.md and docs/*.md, from fenced code blocks only (between ``` lines), by these rules:

1. A line ending in a backslash is joined with the next one (a command continued over several lines).
2. Shell comments (``# ...``) are dropped and quoting is resolved as the shell does (``shlex``); leading environment
   assignments (``HYDRA_FULL_ERROR=1``) are dropped.
3. A line is a command when it then starts with ``python train.py``, ``python evaluate.py`` or ``python sample.py``,
   or with a launcher (``torchrun``, ``srun``) whose arguments hold one of those scripts (``torchrun ... train.py``,
   ``srun python train.py``); the arguments after the script are its overrides. Other lines (``pip``,
   ``python -m pytest``, ``python benchmarks/...``, log output) are not commands.
4. Skipped: lines asking for help (``--help``, ``-h``, ``--hydra-help``) and lines with a placeholder in their
   arguments: ``<...>``, ``...`` or ``…``. Any other flag than ``-m`` / ``--multirun`` fails the test (compose
   cannot take it, so the documentation should not hide it).
5. Hydra-only overrides, ``hydra.*`` keys and ``hydra/<group>=`` choices (``hydra.run.dir=``, ``hydra.sweep.dir=``,
   ``hydra.sweeper.n_trials=``, ``hydra/launcher=slurm``), are dropped: Hydra's compose API does not take them.
6. With ``-m`` / ``--multirun`` each sweep override is expanded: ``a,b,c``, ``range(...)`` and ``choice(...)`` into
   their values, an ``interval(...)`` (Optuna's) to its lower bound. The command is composed once with every sweep
   at its first value, then once more for each further value of each sweep (the others at their first value), so
   every value of every sweep is composed without the whole grid. Without ``-m`` a comma list stays as it is and
   fails, as it does on the command line.

Each command is composed in-process with ``hydra.compose`` against its program's config (``conf/train.yaml``,
``conf/evaluate.yaml``, ``conf/sample.yaml``): a misspelt key or group option fails. Nothing is trained. The composed
config is then resolved (``OmegaConf.to_container(resolve=True)``) to catch a bad interpolation. The README's quick
start (``python train.py``) runs end to end in tests/test_cli.py.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

import train  # noqa: F401  (registers the ${project_root:} resolver)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
SCRIPTS = {"train.py": "train", "evaluate.py": "evaluate", "sample.py": "sample"}  # script -> conf/<name>.yaml
PYTHONS = {"python", "python3"}
LAUNCHERS = {"torchrun", "srun"}
HELP_FLAGS = {"--help", "-h", "--hydra-help"}
MULTIRUN_FLAGS = {"-m", "--multirun"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
COMMAND_START = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:python3?|torchrun|srun)\s")
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|…")
MIN_COMMANDS = 15


@dataclass(frozen=True)
class DocCommand:
    where: str  # page:line
    config_name: str  # train | evaluate | sample
    args: tuple[str, ...]  # everything after the script
    text: str  # the line as documented (joined)


def fenced_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, joined line) of every line inside a fenced code block."""
    in_fence, pending, start = False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            in_fence, pending = not in_fence, ""
            continue
        if not in_fence:
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield start, pending + stripped
        pending = ""


def parse_command(line: str) -> tuple[str, list[str]] | None:
    """(config name, arguments) when ``line`` runs one of the three programs (rule 3), else None."""
    if not (COMMAND_START.match(line) and re.search(r"\b(train|evaluate|sample)\.py\b", line)):
        return None
    tokens = shlex.split(line, comments=True)
    while tokens and ENV_ASSIGNMENT.match(tokens[0]):
        tokens.pop(0)
    if not tokens:
        return None
    names = [Path(token).name for token in tokens]
    if tokens[0] in PYTHONS:
        script_at = 1 if len(names) > 1 and names[1] in SCRIPTS else None
    elif tokens[0] in LAUNCHERS:
        script_at = next((i for i, name in enumerate(names) if name in SCRIPTS), None)
    else:
        script_at = None
    if script_at is None:
        return None
    return SCRIPTS[names[script_at]], tokens[script_at + 1 :]


def documented_commands(pages: list[Path] = PAGES) -> list[DocCommand]:
    commands = []
    for page in pages:
        for number, line in fenced_lines(page.read_text(encoding="utf-8")):
            parsed = parse_command(line)
            if parsed is None:
                continue
            config_name, args = parsed
            if HELP_FLAGS & set(args) or any(PLACEHOLDER.search(arg) for arg in args):
                continue
            where = f"{page.relative_to(ROOT) if page.is_relative_to(ROOT) else page.name}:{number}"
            commands.append(DocCommand(where, config_name, tuple(args), line))
    return commands


def override_sets(args: tuple[str, ...]) -> list[list[str]]:
    """The override lists to compose for one command (rules 4-6)."""
    flags = [arg for arg in args if arg.startswith("-")]
    unknown = [flag for flag in flags if flag not in MULTIRUN_FLAGS]
    assert not unknown, f"flags that compose cannot check: {unknown}"
    multirun = bool(flags)
    overrides = OverridesParser.create().parse_overrides([arg for arg in args if not arg.startswith("-")])
    choices: list[list[str]] = []
    for override in overrides:
        key = override.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        if not (multirun and override.is_sweep_override()):
            choices.append([override.input_line])
        elif override.is_discrete_sweep():
            choices.append([f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()])
        elif override.is_interval_sweep():
            choices.append([f"{override.get_key_element()}={override.value().start}"])
        else:
            raise AssertionError(f"a sweep this test cannot expand: {override.input_line}")
    first = [values[0] for values in choices]
    sets = [first]
    for i, values in enumerate(choices):
        sets += [[*first[:i], value, *first[i + 1 :]] for value in values[1:]]
    return sets


def compose_command(config_name: str, overrides: list[str], run_dir: Path) -> DictConfig:
    """The config the program would run with (``hydra.compose``), resolved; raises on a key or option not there."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides)
    # `run_dir` is ${hydra:runtime.output_dir}: only a Hydra run sets it (from hydra.run.dir, which compose cannot
    # take), so resolving it here needs that runtime value. Give it the directory a run would have.
    if "run_dir" in cfg and not any(override.startswith("run_dir=") for override in overrides):
        cfg.run_dir = str(run_dir)
    OmegaConf.to_container(cfg, resolve=True)
    return cfg


COMMANDS = documented_commands()


@pytest.mark.parametrize("command", COMMANDS, ids=[command.where for command in COMMANDS])
def test_documented_command_composes(command: DocCommand, tmp_path):
    for overrides in override_sets(command.args):
        try:
            compose_command(command.config_name, overrides, tmp_path)
        except Exception as error:  # the page and the command, then Hydra's own message
            pytest.fail(f"{command.where}: {command.text}\n  overrides {overrides}\n  {type(error).__name__}: {error}")


def test_enough_commands_are_documented():
    """The extraction finds the documentation's commands (so the test above cannot pass on none)."""
    assert len(COMMANDS) >= MIN_COMMANDS, [command.where for command in COMMANDS]
    assert {command.config_name for command in COMMANDS} == set(SCRIPTS.values())
    assert any(command.text.startswith("torchrun") for command in COMMANDS)
    assert any(MULTIRUN_FLAGS & set(command.args) for command in COMMANDS)


def test_extraction_rules(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "python train.py loss=dpo   (outside a fence: not a command)\n"
        "```bash\n"
        "python train.py loss=dpo \\\n"
        "    loss.beta=0.1            # a comment\n"
        "torchrun --nproc-per-node 8 train.py strategy=fsdp hydra.run.dir=out\n"
        "HYDRA_FULL_ERROR=1 python evaluate.py tasks=[generate]\n"
        "srun python sample.py prompts.limit=4\n"
        "python train.py --help\n"
        "python train.py experiment=<name>\n"
        "python evaluate.py model.name_or_path=outputs/.../hf\n"
        "python -m pytest -q\n"
        "python benchmarks/head_backward.py --repeats 2\n"
        "resume with: python sample.py output_dir=x\n"
        "```\n",
        encoding="utf-8",
    )
    found = [(c.config_name, c.args) for c in documented_commands([page])]
    assert found == [
        ("train", ("loss=dpo", "loss.beta=0.1")),
        ("train", ("strategy=fsdp", "hydra.run.dir=out")),
        ("evaluate", ("tasks=[generate]",)),
        ("sample", ("prompts.limit=4",)),
    ]
    assert override_sets(("strategy=fsdp", "hydra.run.dir=out", "hydra/launcher=slurm")) == [["strategy=fsdp"]]
    assert override_sets(("-m", "loss=simpo,dpo", "loss.beta=1,2", "seed=1")) == [
        ["loss=simpo", "loss.beta=1", "seed=1"],
        ["loss=dpo", "loss.beta=1", "seed=1"],
        ["loss=simpo", "loss.beta=2", "seed=1"],
    ]
    assert override_sets(("-m", "optimizer.lr=tag(log, interval(5e-4, 3e-3))")) == [["optimizer.lr=0.0005"]]


BAD_OVERRIDES = ["loss.bta=1", "loss=dop", "expriment=tiny", "optimizer.lr=1,2", "data.report_dir=${nope}"]


@pytest.mark.parametrize("bad", BAD_OVERRIDES)
def test_a_wrong_command_fails(bad, tmp_path):
    """What the test above catches: a misspelt key, a misspelt group option, a sweep without -m, a bad interpolation."""
    with pytest.raises(Exception):  # noqa: B017  (Hydra's and OmegaConf's own exception types)
        compose_command("train", [bad], tmp_path)


# --------------------------------------------------------------------------------------------------------- links

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    kept, in_fence = [], False
    for line in text.splitlines():
        if line.strip().startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence:
            kept.append(line)
    return "\n".join(kept)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-', repeats numbered."""
    seen: dict[str, int] = {}
    for line in prose(page.read_text(encoding="utf-8")).splitlines():
        heading = re.match(r"#{1,6} +(.*?) *#* *$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            count = seen.get(slug, -1) + 1
            seen[slug] = count
            if count:
                seen[f"{slug}-{count}"] = 0
    return set(seen)


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page.read_text(encoding="utf-8"))) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_relative_links_lead_somewhere(page: Path):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, broken


def test_readme_links_every_docs_page():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(ROOT / "README.md")}
    pages = set(DOCS.glob("*.md"))
    assert pages, "docs/ holds no page"
    assert not pages - linked, sorted(str(page.relative_to(ROOT)) for page in pages - linked)
