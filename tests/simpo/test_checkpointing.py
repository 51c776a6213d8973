"""``model.gradient_checkpointing``: full and selective checkpointing give the values and gradients of none, bit for
bit, in every batch layout; full recomputes each layer's matmuls and attention in backward, selective only its
element-wise work (its memory is measured in ``benchmarks/RESULTS.md``)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from data.collate import LAYOUTS, PreferenceCollator
from simpo.config.config_checks import check_train_config
from simpo.errors import UserError
from simpo.models.checkpointing import (
    CHECKPOINTING,
    KEPT_OPS,
    checkpointing_kwargs,
    choose_checkpointing,
    is_checkpointing,
)
from simpo.models.policy import build_policy
from simpo.objectives import SimPO
from simpo.training.module import SimPOModule
from tests.conftest import compose_train
from tests.simpo.test_layouts_exact import ARCHITECTURES, pairs, stats  # noqa: F401  (pairs: a fixture)
from train import settle_checkpointing


class BackwardOps(TorchDispatchMode):
    """Counts the operators that run (here: during backward) by name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def run(llama3_tokenizer, pairs, arch: str, mode: bool | str, layout: str) -> tuple[dict, dict, Counter]:  # noqa: F811
    """Per-sequence statistics, gradients and the operators backward ran, for one checkpointing mode."""
    torch.manual_seed(0)
    policy = build_policy(llama3_tokenizer, architecture=ARCHITECTURES[arch], attn_implementation="sdpa",
                          gradient_checkpointing=mode)  # fmt: skip
    module = SimPOModule(policy, SimPO(), chunk_size=7)
    batch = PreferenceCollator(pad_token_id=0, layout=layout, pack_length=96)(pairs)
    out = stats(module, batch)
    with BackwardOps() as ops:
        (out["logp_sum"] * torch.linspace(0.5, 1.5, 12)).sum().backward()
    grads = {name: p.grad for name, p in policy.named_parameters()}
    return {key: value.detach() for key, value in out.items()}, grads, ops.counts


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_full_and_selective_equal_none_bit_for_bit(llama3_tokenizer, pairs, arch, layout):  # noqa: F811
    base, base_grads, base_ops = run(llama3_tokenizer, pairs, arch, False, layout)
    ops = {}
    for mode in (True, "selective"):
        values, grads, ops[mode] = run(llama3_tokenizer, pairs, arch, mode, layout)
        for key, value in base.items():
            assert torch.equal(values[key], value), (mode, key)
        for name, grad in base_grads.items():
            assert grad is not None and torch.equal(grads[name], grad), (mode, name)
    # full runs each layer's matmuls and attention again in backward; selective only the element-wise work
    layers = ARCHITECTURES[arch]["num_hidden_layers"]
    # (of q, k, v, o, gate, up, down only down's output is not needed again: recomputation stops before it)
    assert ops[True]["aten.mm"] == base_ops["aten.mm"] + 6 * layers
    assert ops["selective"]["aten.mm"] == base_ops["aten.mm"]
    assert ops["selective"]["aten._scaled_dot_product_flash_attention_for_cpu"] == 0
    assert base_ops["aten.silu"] == base_ops["aten.rsqrt"] == 0
    assert ops["selective"]["aten.silu"] == ops[True]["aten.silu"] == layers
    assert ops["selective"]["aten.rsqrt"] == ops[True]["aten.rsqrt"] == 2 * layers  # the two norms per layer


def test_the_selective_policy_keeps_matmuls_and_attention_only():
    aten = torch.ops.aten
    assert {aten.mm.default, aten.addmm.default, aten._scaled_dot_product_flash_attention_for_cpu.default} <= KEPT_OPS
    assert not KEPT_OPS & {aten.mul.Tensor, aten.silu.default, aten.rsqrt.default, aten.add.Tensor}
    assert "context_fn" in checkpointing_kwargs("selective") and "context_fn" not in checkpointing_kwargs(True)
    assert checkpointing_kwargs(True)["use_reentrant"] is False


@pytest.mark.parametrize("value", ["1", "0", "yes", "full", "null"])
def test_other_values_are_refused_naming_the_key(tmp_path, value):
    cfg = compose_train(tmp_path, [f"model.gradient_checkpointing={value}"])
    assert not is_checkpointing(cfg.model.gradient_checkpointing)
    assert all(is_checkpointing(v) for v in CHECKPOINTING)
    with pytest.raises(UserError, match=r"^model\.gradient_checkpointing must be auto, false, true .* or selective"):
        check_train_config(cfg)
    for accepted in ("true", "false", "selective", "auto"):
        check_train_config(compose_train(tmp_path, [f"model.gradient_checkpointing={accepted}"]))


def test_auto_is_selective_on_cpu_and_off_on_cuda():
    assert choose_checkpointing("auto", "cpu")[0] == "selective"
    assert choose_checkpointing("auto", "cuda")[0] is False
    for explicit in (False, True, "selective"):
        assert choose_checkpointing(explicit, "cpu") == (explicit, "model.gradient_checkpointing")


def test_train_records_the_concrete_choice(tmp_path):
    cfg = compose_train(tmp_path)
    assert cfg.model.gradient_checkpointing == "auto"  # the default
    settle_checkpointing(cfg, "cpu")
    assert cfg.model.gradient_checkpointing == "selective"  # recorded concretely in the config
