"""evaluate.py measures a checkpoint with its own objective and reference: for a DPO run, the preference task's
rewards and loss equal the run's own final validation (the same pairs, weights and reference)."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

from evaluate import evaluate
from tests.conftest import ROOT, TINY_OVERRIDES, compose_train
from train import train


@pytest.mark.slow
def test_a_dpo_checkpoint_is_evaluated_with_its_objective_and_reference(small_pairs, tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPO_CACHE", str(tmp_path / "cache"))
    data = [f"data.dataset={small_pairs}", "data.val_size=8"]
    run = tmp_path / "run"
    final = train(compose_train(run, [*TINY_OVERRIDES, *data, "loss=dpo", "loss.beta=0.5", "trainer.max_steps=3",
                                      "callbacks.model_checkpoint.every_n_train_steps=3"]))  # fmt: skip
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"run_dir={tmp_path / 'eval'}", *data,
                                             f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])  # fmt: skip
    metrics = evaluate(cfg)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["loss"]["_target_"].endswith("DPO") and saved["loss"]["beta"] == 0.5
    assert metrics["pairs"] == 8
    for name in ("loss", "rewards/margins", "rewards/chosen", "rewards/accuracies"):
        assert metrics[name] == pytest.approx(final[f"val/{name}"], rel=1e-4, abs=1e-6), name
    assert final["val/rewards/margins"] != 0.0  # the rewards are against the reference, not beta * log-probs
