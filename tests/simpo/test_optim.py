"""AdamW parameter groups and the linear-warmup cosine schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from simpo.training.optim import build_optimizer, param_groups, squared_norm, warmup_cosine


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3, bias=False), nn.Embedding(5, 3))


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_param_groups_split_by_dim():
    model = _model()
    lin1, norm, lin2, emb = model
    groups = param_groups(model, weight_decay=0.1)
    assert len(groups) == 2
    decayed, undecayed = groups
    assert decayed["weight_decay"] == 0.1
    assert undecayed["weight_decay"] == 0.0
    assert _ids(decayed["params"]) == _ids([lin1.weight, lin2.weight, emb.weight])
    assert _ids(undecayed["params"]) == _ids([lin1.bias, norm.weight, norm.bias])
    assert all(p.dim() >= 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in undecayed["params"])
    # Every trainable parameter appears exactly once.
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert len(all_ids) == len(set(all_ids)) == len(list(model.parameters()))


def test_param_groups_skip_frozen_and_dedupe_tied():
    model = _model()
    lin1, norm, _, _ = model
    lin1.weight.requires_grad_(False)
    norm.bias.requires_grad_(False)
    groups = param_groups(model, weight_decay=0.05)
    assert id(lin1.weight) not in _ids(groups[0]["params"])
    assert id(norm.bias) not in _ids(groups[1]["params"])

    tied = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False))
    tied[1].weight = tied[0].weight
    groups = param_groups(tied, weight_decay=0.1)
    assert len(groups[0]["params"]) == 1
    assert groups[1]["params"] == []


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.0), (1, 0.1), (5, 0.5), (10, 1.0), (55, 0.5), (100, 0.0), (150, 0.0)],
)
def test_warmup_cosine_hand_values(step, expected):
    assert warmup_cosine(step, total_steps=100, warmup_steps=10) == pytest.approx(expected, abs=1e-12)


def test_warmup_cosine_intermediate_values():
    # step 32: progress (32 - 10) / 90 = 11/45 -> 0.5 * (1 + cos(11 pi / 45)).
    assert warmup_cosine(32, 100, 10) == pytest.approx(0.5 * (1 + math.cos(11 * math.pi / 45)), abs=1e-15)
    # total 41, warmup 1, step 31: 3/4 of the decay -> 0.5 * (1 + cos(3pi/4)) = 0.1464466...
    assert warmup_cosine(31, 41, 1) == pytest.approx(0.14644660940672627, abs=1e-15)
    # No warmup: starts at 1.0 and is monotone non-increasing.
    values = [warmup_cosine(s, 20, 0) for s in range(21)]
    assert values[0] == 1.0
    assert values[-1] == pytest.approx(0.0, abs=1e-15)
    assert all(a >= b for a, b in itertools.pairwise(values))
    # Warmup is linear and strictly increasing.
    warm = [warmup_cosine(s, 100, 10) for s in range(11)]
    assert warm == pytest.approx([s / 10 for s in range(11)], abs=1e-15)


@pytest.mark.parametrize(("warmup_ratio", "total", "warmup"), [(0.1, 100, 10), (0.25, 40, 10), (0.0, 20, 0)])
def test_build_optimizer_schedule(warmup_ratio, total, warmup):
    model = _model()
    peak = 3e-4
    optimizer, scheduler = build_optimizer(
        model, lr=peak, weight_decay=0.01, betas=(0.9, 0.95), eps=1e-8, warmup_ratio=warmup_ratio, total_steps=total
    )
    assert isinstance(optimizer, torch.optim.AdamW)
    assert warmup == math.ceil(warmup_ratio * total)
    assert len(optimizer.param_groups) == 2
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
    assert optimizer.param_groups[1]["weight_decay"] == 0.0
    for g in optimizer.param_groups:
        assert g["betas"] == (0.9, 0.95)
        assert g["eps"] == 1e-8
        assert g["initial_lr"] == peak

    checkpoints = {0, 1, warmup // 2, warmup, warmup + 1, (warmup + total) // 2, total - 1, total}
    for k in range(total + 1):
        if k in checkpoints:
            expected = peak * warmup_cosine(k, total, warmup)
            for g in optimizer.param_groups:
                assert g["lr"] == pytest.approx(expected, rel=1e-12, abs=1e-18), k
        optimizer.step()
        scheduler.step()


def test_build_optimizer_hand_lrs():
    """Peak 1e-3, total 100, warmup_ratio 0.1 -> lr after k steps: 0, 5e-4, 1e-3, 5e-4, 0."""
    optimizer, scheduler = build_optimizer(
        _model(), lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8, warmup_ratio=0.1, total_steps=100
    )
    seen = {}
    for k in range(101):
        seen[k] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    assert seen[0] == 0.0
    assert seen[5] == pytest.approx(5e-4, abs=1e-15)
    assert seen[10] == pytest.approx(1e-3, abs=1e-15)
    assert seen[55] == pytest.approx(5e-4, abs=1e-15)
    assert seen[100] == pytest.approx(0.0, abs=1e-15)


def test_build_optimizer_warmup_steps_is_ceil():
    # warmup_ratio 0.05 of 30 steps = 1.5 -> ceil -> 2 warmup steps: lr 0, peak/2, peak.
    optimizer, scheduler = build_optimizer(
        _model(), lr=2.0, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8, warmup_ratio=0.05, total_steps=30
    )
    lrs = []
    for _ in range(3):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.0, 1.0, 2.0], abs=1e-15)


def test_weight_decay_applies_only_to_matrices():
    """One AdamW step with zero gradients: only >= 2-D params shrink, by lr * wd (decoupled decay)."""
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    optimizer, _ = build_optimizer(
        model, lr=0.1, weight_decay=0.5, betas=(0.9, 0.999), eps=1e-8, warmup_ratio=0.0, total_steps=10
    )
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    lin1, norm, lin2, emb = model
    for p in (lin1.weight, lin2.weight, emb.weight):
        torch.testing.assert_close(p, torch.full_like(p, 1.0 - 0.1 * 0.5))
    for p in (lin1.bias, norm.weight, norm.bias):
        torch.testing.assert_close(p, torch.ones_like(p), rtol=0, atol=0)


@pytest.mark.parametrize("warmup_ratio", [-0.1, 1.0, 1.5])
def test_invalid_warmup_ratio_raises(warmup_ratio):
    with pytest.raises(ValueError):
        build_optimizer(
            _model(), lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8, warmup_ratio=warmup_ratio, total_steps=10
        )


def _adamw_float64(params: list[torch.Tensor], grads: list[list[torch.Tensor]], lrs: list[float], decay: list[float],
                   betas: tuple[float, float], eps: float) -> list[torch.Tensor]:  # fmt: skip
    """AdamW written from its paper (Loshchilov & Hutter, decoupled decay) in float64: params after len(lrs) steps."""
    beta1, beta2 = betas
    out = [p.double().clone() for p in params]
    m = [torch.zeros_like(p) for p in out]
    v = [torch.zeros_like(p) for p in out]
    for t, (lr, step_grads) in enumerate(zip(lrs, grads, strict=True), start=1):
        for i, g in enumerate(step_grads):
            g = g.double()
            out[i] = out[i] * (1 - lr * decay[i])
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat, v_hat = m[i] / (1 - beta1**t), v[i] / (1 - beta2**t)
            out[i] = out[i] - lr * m_hat / (v_hat.sqrt() + eps)
    return out


@pytest.mark.parametrize("implementation", ["fused", "foreach", "for_loop"])
def test_every_implementation_equals_float64_adamw(implementation):
    """Three scheduled steps with weight decay on matrices: each implementation equals AdamW written out in float64."""
    model = _model()
    start = [p.detach().clone() for p in model.parameters()]
    decay = [0.1 if p.dim() >= 2 else 0.0 for p in model.parameters()]
    optimizer, scheduler = build_optimizer(
        model, 0.05, 0.1, (0.9, 0.99), 1e-8, warmup_ratio=0.0, total_steps=4, implementation=implementation
    )
    generator = torch.Generator().manual_seed(1)
    grads, lrs = [], []
    for _ in range(3):
        lrs.append(optimizer.param_groups[0]["lr"])
        step_grads = [torch.randn(p.shape, generator=generator) for p in model.parameters()]
        for p, g in zip(model.parameters(), step_grads, strict=True):
            p.grad = g.clone()
        grads.append(step_grads)
        optimizer.step()
        scheduler.step()
    assert lrs[0] > 0 and len(set(lrs)) == 3
    expected = _adamw_float64(start, grads, lrs, decay, (0.9, 0.99), 1e-8)
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach().double(), e, rtol=1e-6, atol=1e-6)


def test_unknown_implementation_names_the_key():
    with pytest.raises(ValueError, match=r"optimizer.implementation must be one of \['fused', 'foreach', 'for_loop'\]"):
        build_optimizer(_model(), 1e-3, 0.0, (0.9, 0.999), 1e-8, 0.0, total_steps=2, implementation="apex")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_squared_norm_equals_float64_sum_of_squares(dtype):
    """Every float dtype (float64 must not be narrowed by the norm's dtype argument), matrices and vectors alike."""
    generator = torch.Generator().manual_seed(2)
    grads = [(torch.randn(shape, generator=generator) * scale).to(dtype)
             for shape, scale in (((300, 70), 3.0), ((70,), 0.01), ((5, 6, 7), 100.0))]  # fmt: skip
    expected = sum(float((g.double() ** 2).sum()) for g in grads)
    total = squared_norm(grads)
    assert total.dtype == torch.float32 and total.dim() == 0
    assert float(total) == pytest.approx(expected, rel=1e-5)
