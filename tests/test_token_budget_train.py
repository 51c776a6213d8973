"""train.py with data.max_tokens_per_batch: every layout trains, the config is checked, and a run interrupted
mid-epoch resumes to the same losses and weights as a straight one."""

from __future__ import annotations

import math

import pytest
import torch

from simpo.config.config_checks import ConfigError
from tests.conftest import TINY_OVERRIDES, compose_train
from tests.test_resume import EXACT, losses
from train import train

# 3 optimizer steps of 2 micro-batches of at most 512 token positions (the bundled pairs: ~100 tokens each side)
BUDGET = [*TINY_OVERRIDES, "data.max_tokens_per_batch=512", "trainer.accumulate_grad_batches=2",
          "trainer.max_steps=3", "trainer.val_check_interval=1.0", "trainer.limit_val_batches=2"]  # fmt: skip


@pytest.mark.slow  # about 45 s a layout on a busy 2-core machine
@pytest.mark.parametrize("layout", ["padded", "packed", "shared_prompt", "shared_prompt_packed"])
def test_train_runs_with_a_token_budget(tmp_path, layout):
    metrics = train(compose_train(tmp_path, [*BUDGET, f"data.layout={layout}"]))
    got = losses(tmp_path)
    assert sorted(got) == [0, 1, 2] and all(math.isfinite(v) for v in got.values())
    assert math.isfinite(metrics["val/loss"])


def test_the_budget_key_is_checked_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.max_tokens_per_batch must be a positive integer or null, not 0"):
        train(compose_train(tmp_path / "run", ["data.max_tokens_per_batch=0"]))
    with pytest.raises(ValueError, match=r"data\.global_batch_size=8 fixes the pairs per optimizer step"):
        train(compose_train(tmp_path / "run", ["data.max_tokens_per_batch=512", "data.global_batch_size=8"]))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_token_budget_run_resumes_exactly(tmp_path):
    """SIGTERM after micro-batch 6 (first half of step 4), resume: the losses and weights of a straight run."""
    overrides = [*EXACT, "data.max_tokens_per_batch=512", "data.layout=shared_prompt_packed"]
    straight = tmp_path / "straight"
    train(compose_train(straight, overrides))
    stopped = tmp_path / "stopped"
    signal_cb = ["+callbacks.signal._target_=tests.test_resume.SendSignalAt", "+callbacks.signal.batch_idx=6"]
    with pytest.raises(SystemExit):
        train(compose_train(stopped, [*overrides, *signal_cb]))
    assert torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    train(compose_train(stopped, [*overrides, "ckpt_path=last"]))
    expected, got = losses(straight), losses(stopped)
    assert sorted(got) == list(range(6))
    for step in range(6):
        assert got[step] == pytest.approx(expected[step], abs=1e-6, rel=0), step
    final = torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    reference = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for name, tensor in reference.items():
        assert torch.allclose(final[name], tensor, atol=1e-6), name
