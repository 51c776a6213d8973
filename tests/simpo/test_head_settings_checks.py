"""``model.chunk_size`` and ``model.head_backward`` have one rule and one wording wherever a value arrives: the
training config check, the LightningModule, the labelled-only head and the chunked log-probs themselves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simpo.config.config_checks import check_train_config
from simpo.core.chunked_logprobs import chunked_token_logps
from simpo.core.labelled_head import attach_labelled_logps
from simpo.errors import UserError
from simpo.objectives import SimPO
from simpo.training.module import SimPOModule
from tests.conftest import compose_train


def messages(tmp_path, key: str, value: object) -> set[str]:
    """The error message of each place that takes ``key``'s ``value``."""
    chunk_size, head_backward = (value, "auto") if key == "chunk_size" else (4, value)
    calls = [
        lambda: chunked_token_logps(
            torch.randn(3, 2), torch.randn(5, 2), torch.zeros(3, dtype=torch.long), chunk_size, None, head_backward
        ),
        lambda: attach_labelled_logps(nn.Linear(2, 2), chunk_size, head_backward),
        lambda: SimPOModule(nn.Linear(2, 2), SimPO(), chunk_size=chunk_size, head_backward=head_backward),
        lambda: check_train_config(compose_train(tmp_path, [f"model.{key}={value}"])),
    ]
    found = set()
    for call in calls:
        with pytest.raises(UserError) as error:
            call()
        found.add(str(error.value))
    return found


@pytest.mark.parametrize(("key", "value", "message"), [
    ("chunk_size", 0, "model.chunk_size must be null or a positive integer, not 0"),
    ("head_backward", "stash", "model.head_backward must be one of ['auto', 'recompute', 'store'], not 'stash'"),
])  # fmt: skip
def test_one_wording_everywhere(tmp_path, key, value, message):
    assert messages(tmp_path, key, value) == {message}


def test_dtype_keys_share_one_rule_and_wording(tmp_path):
    from simpo.models.policy import resolve_dtype

    expected = "model.dtype must be one of ['bfloat16', 'float16', 'float32'], not 'fp8'"
    train_check = lambda: check_train_config(compose_train(tmp_path, ["model.dtype=fp8"]))  # noqa: E731
    for call in (lambda: resolve_dtype("fp8"), train_check):
        with pytest.raises(UserError) as error:
            call()
        assert str(error.value) == expected
    with pytest.raises(UserError, match=r"^reward_model\.dtype must be one of \['bfloat16', 'float16', 'float32'\]"):
        resolve_dtype("fp8", key="reward_model.dtype")


@pytest.mark.parametrize(("override", "kwargs", "message"), [
    ("optimizer.warmup_ratio=1.5", {"warmup_ratio": 1.5}, "optimizer.warmup_ratio must be a number in [0, 1), not 1.5"),
    ("optimizer.implementation=apex", {"implementation": "apex"},
     "optimizer.implementation must be one of ['fused', 'foreach', 'for_loop'], not 'apex'"),
])  # fmt: skip
def test_optimizer_keys_share_one_rule_and_wording(tmp_path, override, kwargs, message):
    from simpo.training.optim import build_optimizer

    settings = {"lr": 1e-3, "weight_decay": 0.0, "betas": (0.9, 0.999), "eps": 1e-8, "warmup_ratio": 0.1,
                "total_steps": 10, **kwargs}  # fmt: skip
    train_check = lambda: check_train_config(compose_train(tmp_path, [override]))  # noqa: E731
    for call in (lambda: build_optimizer(nn.Linear(2, 2), **settings), train_check):
        with pytest.raises(UserError) as error:
            call()
        assert str(error.value) == message
