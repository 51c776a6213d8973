"""A sweep's optimized_metric is checked against what its runs log before any of them trains."""

from __future__ import annotations

import csv
import json

import pytest

from callbacks.throughput import ThroughputMonitor
from simpo.objectives import OBJECTIVES
from simpo.training.metric_names import (
    OptimizedMetricError,
    check_metric_has_data,
    check_optimized_metric,
    logged_metrics,
)
from tests.conftest import TINY_OVERRIDES, compose_train
from train import run_and_record

EXTRA = {"orpo": {"val/log_odds_ratio", "val/log_odds_chosen"}, "kto": {"val/kl"}}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_names_its_metrics(name):
    logged = logged_metrics(OBJECTIVES[name](), [ThroughputMonitor()])
    for metric in ("loss", "rewards/accuracies", "rewards/margins", "logps/chosen", "logits/rejected"):
        assert {f"train/{metric}", f"val/{metric}"} <= logged
    assert {"train/lr", "train/grad_norm", "train/tokens_per_sec", "train/mfu"} <= logged
    assert EXTRA.get(name, set()) <= logged


def test_a_misspelled_metric_is_named_with_the_closest(tmp_path):
    logged = logged_metrics(OBJECTIVES["simpo"]())
    with pytest.raises(OptimizedMetricError, match=r"optimized_metric=val/acuracy .*did you mean val/rewards/acc"):
        check_optimized_metric("val/acuracy", logged)
    check_optimized_metric("val/loss", logged)
    with pytest.raises(OptimizedMetricError, match=r"no validation data: set data.test_split .* data.val_size"):
        check_metric_has_data("val/loss", has_validation=False)
    check_metric_has_data("train/loss", has_validation=False)
    check_metric_has_data("val/loss", has_validation=True)


def test_the_names_are_those_a_real_run_logs(tmp_path):
    run_and_record(compose_train(tmp_path, [*TINY_OVERRIDES, "trainer.max_steps=2", "loss=orpo"]))
    with (tmp_path / "metrics.csv").open(newline="") as handle:
        columns = set(next(csv.reader(handle))) - {"step", "epoch"}
    logged = logged_metrics(OBJECTIVES["orpo"](), [ThroughputMonitor()])
    assert columns <= logged
    assert {name for name in logged if name.startswith("val/")} <= columns


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["optimized_metric=val/acuracy"], "did you mean val/rewards/accuracies"),
        (["data.test_split=null"], "has no validation data"),
    ],
)
def test_a_sweep_run_is_refused_before_it_loads_or_trains(tmp_path, overrides, match):
    run_dir = tmp_path / "0"
    with pytest.raises(OptimizedMetricError, match=match):
        run_and_record(compose_train(run_dir, [*TINY_OVERRIDES, *overrides]), multirun=True)
    record = json.loads((run_dir / "status.json").read_text())
    assert record["status"] == "failed" and "optimized_metric=val/" in record["error"]
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.csv").exists()
