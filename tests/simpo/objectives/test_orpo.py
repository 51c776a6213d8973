"""ORPO objective: float64 reference, hand values, gradcheck, key errors, no inf/nan near p = 1."""

from __future__ import annotations

import math

import pytest
import torch
from pair_cases import Pairs, assert_matches, gradcheck_loss, log_sigmoid, one_pair, random_pairs, token_mean_nll

from simpo.objectives import ORPO, PairLogps
from simpo.objectives.orpo import log_odds


def reference_log_odds(mean_logp: float) -> float:
    p = math.exp(mean_logp)
    return math.log(p) - math.log(1 - p)  # straight from the definition log(p / (1 - p))


def reference(p: Pairs, weight: float) -> dict:
    odds_w = [reference_log_odds(s / n) for s, n in zip(p.sum_w, p.n_w, strict=True)]
    odds_l = [reference_log_odds(s / n) for s, n in zip(p.sum_l, p.n_l, strict=True)]
    losses = [-weight * log_sigmoid(w - lo) for w, lo in zip(odds_w, odds_l, strict=True)]
    return {
        "losses": losses,
        "loss": token_mean_nll(p) + sum(losses) / len(losses),
        "rewards_w": odds_w,
        "rewards_l": odds_l,
        "log_odds_ratio": sum(log_sigmoid(w - lo) for w, lo in zip(odds_w, odds_l, strict=True)) / len(losses),
    }


@pytest.mark.parametrize("weight", [0.1, 0.5, 1.0, 2.0, 0.0])
def test_matches_float64_reference(weight):
    p = random_pairs(16, seed=61)
    out = ORPO(odds_ratio_weight=weight)(p.stats(long_counts=True))
    ref = reference(p, weight)
    # Mean log-probs in (-3, 0): the reference's log(1 - p) is accurate there to ~1e-15 relative.
    assert_matches(out, ref["losses"], ref["loss"], ref["rewards_w"], ref["rewards_l"])
    assert out.metrics["sft_loss"].item() == pytest.approx(token_mean_nll(p), rel=1e-13)
    assert out.metrics["log_odds_ratio"].item() == pytest.approx(ref["log_odds_ratio"], rel=1e-12)


def test_hand_computed():
    # p(y_w) = 0.5 (2 tokens, sum 2 log 0.5): odds 1, log odds 0; p(y_l) = 0.2 (3 tokens, sum 3 log 0.2):
    # odds 0.25, log odds -log 4. log sigmoid(log 4) = log(4/5) = -0.2231435513142097; lambda 0.5: 0.11157177565710485.
    # NLL = -2 log 0.5 / 2 = log 2 = 0.6931471805599453; loss = 0.8047189562170501.
    out = ORPO(odds_ratio_weight=0.5)(one_pair(2 * math.log(0.5), 3 * math.log(0.2), 2, 3))
    assert out.losses.item() == pytest.approx(0.11157177565710485, abs=1e-15)
    assert out.loss.item() == pytest.approx(0.8047189562170501, abs=1e-15)
    assert out.chosen_rewards.item() == pytest.approx(0.0, abs=1e-15)
    assert out.rejected_rewards.item() == pytest.approx(-math.log(4), abs=1e-15)
    assert out.metrics["log_odds_chosen"].item() == pytest.approx(math.log(4), abs=1e-15)
    assert out.metrics["log_odds_ratio"].item() == pytest.approx(math.log(0.8), abs=1e-15)


def test_equal_responses():
    # Equal log odds: lambda * log 2, plus the NLL 4 / 4 = 1.
    out = ORPO(odds_ratio_weight=2.0)(one_pair(-4.0, -4.0, 4, 4))
    assert out.loss.item() == pytest.approx(2 * math.log(2) + 1.0, abs=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_log_odds_is_finite_with_finite_gradients_everywhere(dtype):
    m = torch.tensor([0.0, -1e-30, -1e-12, -1e-6, -0.01, -math.log(2), -0.7, -1.0, -40.0, -1e4, -1e30], dtype=dtype)
    m.requires_grad_()
    out = log_odds(m)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(m.grad).all()
    assert (out[1:] <= out[:-1]).all()  # non-increasing as p falls


def test_log_odds_accuracy_on_both_branches():
    m = torch.tensor([-1e-10, -1e-3, -0.5, -math.log(2), -0.75, -5.0, -50.0], dtype=torch.float64)
    expected = [x - math.log(-math.expm1(x)) for x in m.tolist()]  # exact in doubles for these inputs
    torch.testing.assert_close(log_odds(m), torch.tensor(expected, dtype=torch.float64), rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_inf_or_nan_near_p_one_or_zero(dtype):
    # Chosen and rejected with every token at probability 1 (mean log-prob exactly 0), one near 1, one ~0.
    sums_w = torch.tensor([0.0, 0.0, -1e-9, -1e4], dtype=dtype, requires_grad=True)
    sums_l = torch.tensor([0.0, -1e4, 0.0, -1e-9], dtype=dtype, requires_grad=True)
    n = torch.tensor([3, 3, 3, 3])
    out = ORPO(odds_ratio_weight=1.0)(PairLogps(sums_w, sums_l, n, n))
    out.loss.backward()
    for t in (out.loss, out.losses, out.chosen_rewards, out.rejected_rewards, sums_w.grad, sums_l.grad):
        assert torch.isfinite(t).all()
    assert out.losses[0].item() == pytest.approx(math.log(2), rel=1e-6)  # equal (capped) odds
    assert out.losses[1].item() < 1e-6 and out.losses[3].item() > 1e3  # right and badly wrong


@pytest.mark.parametrize("weight", [0.1, 2.0])
def test_gradcheck(weight):
    assert gradcheck_loss(ORPO(odds_ratio_weight=weight), random_pairs(5, seed=29))


@pytest.mark.parametrize("weight", [-0.1, "1", float("inf"), True])
def test_bad_weight_names_the_key(weight):
    with pytest.raises(ValueError, match=r"loss\.odds_ratio_weight"):
        ORPO(odds_ratio_weight=weight)


def test_declares_no_reference():
    assert not ORPO.needs_reference and not ORPO.needs_kl_pairs
