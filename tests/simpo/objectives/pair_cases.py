"""Shared inputs of the objective tests: random float64 pair statistics and plain-float math helpers.

The expected values of every test are computed pair by pair in Python floats (double precision) from the
formulas, never by calling the library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from simpo.objectives import PairLogps


def log_sigmoid(x: float) -> float:
    """Numerically stable ``log(sigmoid(x))``."""
    if x >= 0:
        return -math.log1p(math.exp(-x))
    return x - math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return math.exp(log_sigmoid(x))


@dataclass
class Pairs:
    """B pairs as Python lists (for the float64 references) and as a ``PairLogps`` (for the library)."""

    sum_w: list[float]
    sum_l: list[float]
    n_w: list[int]
    n_l: list[int]
    ref_w: list[float]
    ref_l: list[float]
    kl: list[float]
    ref_kl: list[float]

    def stats(self, *, long_counts: bool = False, requires_grad: bool = False) -> PairLogps:
        def t(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)

        def counts(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long if long_counts else torch.float64)

        return PairLogps(
            chosen_logp_sum=t(self.sum_w),
            rejected_logp_sum=t(self.sum_l),
            chosen_tokens=counts(self.n_w),
            rejected_tokens=counts(self.n_l),
            ref_chosen_logp_sum=torch.tensor(self.ref_w, dtype=torch.float64),
            ref_rejected_logp_sum=torch.tensor(self.ref_l, dtype=torch.float64),
            kl_logp_sum=t(self.kl),
            ref_kl_logp_sum=torch.tensor(self.ref_kl, dtype=torch.float64),
        )


def random_pairs(batch: int, seed: int, *, per_token_scale: float = 3.0) -> Pairs:
    """B pairs with 1..60 tokens per response, mean log-probs in (-scale, 0), references near the policy."""
    g = torch.Generator().manual_seed(seed)
    n_w = torch.randint(1, 60, (batch,), generator=g)
    n_l = torch.randint(1, 60, (batch,), generator=g)
    sum_w = -torch.rand(batch, generator=g, dtype=torch.float64) * per_token_scale * n_w
    sum_l = -torch.rand(batch, generator=g, dtype=torch.float64) * per_token_scale * n_l
    ref_w = sum_w + torch.randn(batch, generator=g, dtype=torch.float64) * 4
    ref_l = sum_l + torch.randn(batch, generator=g, dtype=torch.float64) * 4
    kl = -torch.rand(batch, generator=g, dtype=torch.float64) * 80
    ref_kl = kl + torch.randn(batch, generator=g, dtype=torch.float64) * 5 - 1.0
    return Pairs(
        sum_w.tolist(), sum_l.tolist(), n_w.tolist(), n_l.tolist(), ref_w.tolist(), ref_l.tolist(),
        kl.tolist(), ref_kl.tolist(),
    )  # fmt: skip


def one_pair(sum_w: float, sum_l: float, n_w: int, n_l: int, ref_w: float = 0.0, ref_l: float = 0.0) -> PairLogps:
    """A single pair (B = 1) in float64, for hand-computed values."""

    def t(v: float) -> torch.Tensor:
        return torch.tensor([v], dtype=torch.float64)

    return PairLogps(t(sum_w), t(sum_l), t(n_w), t(n_l), t(ref_w), t(ref_l))


def token_mean_nll(p: Pairs) -> float:
    """The chosen responses' token-mean NLL over the batch: ``-sum(log pi(y_w)) / sum(|y_w|)``."""
    return -sum(p.sum_w) / sum(p.n_w)


def assert_matches(out, losses: list[float], loss: float, rewards_w: list[float], rewards_l: list[float]) -> None:
    """The library's output equals the float64 reference to 1e-12 (relative) and has the documented shapes."""
    b = len(losses)
    assert out.loss.shape == () and out.losses.shape == (b,)
    assert out.chosen_rewards.shape == (b,) and out.rejected_rewards.shape == (b,)
    assert out.loss.dtype == torch.float64
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    for value in out.metrics.values():
        assert value.shape == () and not value.requires_grad

    def f64(v):
        return torch.tensor(v, dtype=torch.float64)

    torch.testing.assert_close(out.losses.detach(), f64(losses), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.loss.detach(), f64(loss), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.chosen_rewards, f64(rewards_w), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.rejected_rewards, f64(rewards_l), rtol=1e-12, atol=1e-12)


def gradcheck_loss(objective, pairs: Pairs) -> bool:
    """``torch.autograd.gradcheck`` of ``loss`` and the per-pair ``losses`` in the policy's summed log-probs
    (float64). The references and KTO's reference point are constants of the loss (no gradient)."""
    base = pairs.stats()

    def fn(sum_w: torch.Tensor, sum_l: torch.Tensor):
        out = objective(replace(base, chosen_logp_sum=sum_w, rejected_logp_sum=sum_l))
        return out.loss, out.losses

    inputs = tuple(torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (pairs.sum_w, pairs.sum_l))
    return torch.autograd.gradcheck(fn, inputs)


def with_kl_pairs(stats: PairLogps, kl: list[float], ref_kl: list[float]) -> PairLogps:
    """``stats`` with KTO's mismatched-pair log-probs set (float64)."""
    f64 = torch.float64
    return replace(stats, kl_logp_sum=torch.tensor(kl, dtype=f64), ref_kl_logp_sum=torch.tensor(ref_kl, dtype=f64))
