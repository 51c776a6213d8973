"""The ready sweep of each objective: conf/hparams_search/<objective>_grid.yaml holds the SimPO paper's search."""

from __future__ import annotations

import csv
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from data.tokenizers import bundled_tokenizer_dir
from simpo.config.entrypoint import build_loss
from simpo.objectives import OBJECTIVES
from tests.conftest import ROOT

# The SimPO paper's hyperparameter search (arXiv 2405.14734, Table 3), every objective also over these lrs.
LEARNING_RATES = [3e-7, 5e-7, 6e-7, 1e-6]
GRIDS = {
    "dpo": {"loss.beta": [0.01, 0.05, 0.1]},
    "ipo": {"loss.tau": [0.01, 0.1, 0.5, 1.0]},
    "rdpo": {"loss.alpha": [0.05, 0.1, 0.5, 1.0], "loss.beta": [0.01, 0.05, 0.1]},
    "cpo": {"loss.sft_weight": [1.0], "loss.beta": [0.01, 0.05, 0.1]},
    "kto": {"loss.desirable_weight": [1.0], "loss.undesirable_weight": [1.0], "loss.beta": [0.01, 0.05, 0.1]},
    "orpo": {"loss.odds_ratio_weight": [0.1, 0.5, 1.0, 2.0]},
    "slic": {"loss.delta": [0.1, 0.5, 1.0, 2.0], "loss.sft_weight": [0.1, 0.5, 1.0, 10.0]},
    "rrhf": {"loss.sft_weight": [0.1, 0.5, 1.0, 10.0]},
}


def compose_sweep(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def grid_values(params) -> dict[str, list[float]]:
    """The sweeper's ``key: a,b,c`` choices as numbers."""
    return {key: [float(v) for v in str(choices).split(",")] for key, choices in params.items()}


@pytest.mark.parametrize("objective", sorted(GRIDS))
def test_sweep_holds_the_papers_grid_and_selects_its_objective(objective):
    cfg = compose_sweep(f"hparams_search={objective}_grid", "experiment=setting/llama-3-8b-instruct")
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.loss._target_ == f"{OBJECTIVES[objective].__module__}.{OBJECTIVES[objective].__name__}"
    assert grid_values(cfg.hydra.sweeper.params) == {"optimizer.lr": LEARNING_RATES, **GRIDS[objective]}
    assert cfg.model.name_or_path == "meta-llama/Meta-Llama-3-8B-Instruct"  # the setting stays
    # every point of the grid is a valid objective (its keys and values pass the objective's checks)
    loss = OmegaConf.to_container(cfg.loss, resolve=True)
    keys = [key.removeprefix("loss.") for key in GRIDS[objective]]
    for point in itertools.product(*GRIDS[objective].values()):
        assert isinstance(build_loss({**loss, **dict(zip(keys, point, strict=True))}), OBJECTIVES[objective])


def test_dpo_sweep_over_a_dpo_recipe():
    cfg = compose_sweep("hparams_search=dpo_grid", "experiment=llama-3-8b-instruct-dpo")
    assert cfg.loss._target_ == "simpo.objectives.dpo.DPO" and cfg.reference.mode == "cached"
    assert grid_values(cfg.hydra.sweeper.params) == {"optimizer.lr": LEARNING_RATES, **GRIDS["dpo"]}


def small_preference_set(directory: Path, train_rows: int = 40, test_rows: int = 16) -> Path:
    """The first rows of the bundled set's splits, as a data directory."""
    directory.mkdir()
    for split, rows in (("train_prefs", train_rows), ("test_prefs", test_rows)):
        lines = (ROOT / "data" / "tiny_prefs" / f"{split}.jsonl").read_text().splitlines()[:rows]
        (directory / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return directory


@pytest.mark.slow
def test_dpo_sweep_end_to_end_computes_the_reference_once(tmp_path):
    """`python train.py -m hparams_search=dpo_grid` narrowed to 2 runs on CPU: both train DPO; the first computes the
    cached reference log-probs, the second reuses the same table."""
    cache = tmp_path / "cache"
    shutil.copytree(bundled_tokenizer_dir("llama3"), cache / "tokenizers" / "llama3")  # no rebuild of the tokenizer
    data, sweep_dir = small_preference_set(tmp_path / "data"), tmp_path / "sweep"
    args = [sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=dpo_grid", f"hydra.sweep.dir={sweep_dir}",
            f"data.dataset={data}", "optimizer.lr=1e-3", "loss.beta=0.1,0.5", "trainer.max_steps=3",
            "trainer.val_check_interval=3", "trainer.enable_progress_bar=false", "data.batch_size=4"]  # fmt: skip
    env = {**os.environ, "SIMPO_CACHE": str(cache)}
    out = subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    with (sweep_dir / "summary.csv").open() as handle:
        rows = {row["run"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == ["0", "1"] and all(row["status"] == "completed" for row in rows.values())
    for run, beta in (("0", 0.1), ("1", 0.5)):
        config = yaml.safe_load((sweep_dir / run / "config.yaml").read_text())
        assert config["loss"]["_target_"] == "simpo.objectives.dpo.DPO" and config["loss"]["beta"] == beta
        assert 0.0 <= float(rows[run]["val/rewards/accuracies"]) <= 1.0
    tables = list((cache / "reference").glob("*.pt"))
    assert len(tables) == 1, tables
    logs = [(sweep_dir / run / "train.log").read_text() for run in ("0", "1")]
    assert "computed 56 pairs' reference log-probs" in logs[0] and str(tables[0]) in logs[0]
    assert f"56 pairs' reference log-probs loaded from {tables[0]}" in logs[1] and "computed" not in logs[1]
