"""CPO objective: float64 reference, hand values, gradcheck, key errors, edge cases."""

from __future__ import annotations

import math

import pytest
from pair_cases import Pairs, assert_matches, gradcheck_loss, log_sigmoid, one_pair, random_pairs, token_mean_nll

from simpo.objectives import CPO


def reference(p: Pairs, beta: float, sft_weight: float, eps: float) -> dict:
    losses = []
    for w, lo in zip(p.sum_w, p.sum_l, strict=True):
        x = beta * w - beta * lo
        losses.append(-(1 - eps) * log_sigmoid(x) - eps * log_sigmoid(-x))
    return {
        "losses": losses,
        "loss": sum(losses) / len(losses) + sft_weight * token_mean_nll(p),
        "rewards_w": [beta * w for w in p.sum_w],
        "rewards_l": [beta * v for v in p.sum_l],
    }


@pytest.mark.parametrize(("beta", "sft_weight", "eps"), [(0.1, 1.0, 0.0), (0.01, 1.0, 0.0), (0.05, 0.0, 0.1)])
def test_matches_float64_reference(beta, sft_weight, eps):
    p = random_pairs(16, seed=51)
    out = CPO(beta=beta, sft_weight=sft_weight, label_smoothing=eps)(p.stats(long_counts=True))
    ref = reference(p, beta, sft_weight, eps)
    assert_matches(out, ref["losses"], ref["loss"], ref["rewards_w"], ref["rewards_l"])
    assert ("sft_loss" in out.metrics) == (sft_weight > 0)


def test_hand_computed():
    # Sums w -10 (5 tokens), l -20; beta 0.1: 0.1 * (-10 + 20) = 1, preference loss log(1 + e^-1) = 0.31326...;
    # NLL = 10 / 5 = 2; sft_weight 1: loss = 2.31326168751822286; rewards -1 and -2.
    out = CPO(beta=0.1, sft_weight=1.0)(one_pair(-10.0, -20.0, 5, 7))
    assert out.losses.item() == pytest.approx(0.31326168751822286, abs=1e-15)
    assert out.loss.item() == pytest.approx(2.31326168751822286, abs=1e-15)
    assert out.metrics["sft_loss"].item() == 2.0
    assert out.chosen_rewards.item() == pytest.approx(-1.0) and out.rejected_rewards.item() == pytest.approx(-2.0)


def test_nll_is_a_token_mean_over_the_batch():
    # sums -3, -5 over 2, 6 tokens: 8 / 8 = 1, not the mean of per-response means (1.5 + 5/6) / 2.
    p = Pairs([-3.0, -5.0], [-4.0, -4.0], [2, 6], [3, 3], [0.0] * 2, [0.0] * 2, [0.0] * 2, [0.0] * 2)
    assert CPO(sft_weight=0.5)(p.stats()).metrics["sft_loss"].item() == pytest.approx(1.0, abs=1e-15)


def test_equal_responses():
    # Preference loss log 2, NLL 8 / 4 = 2, sft_weight 0.5: log 2 + 1.
    out = CPO(beta=0.1, sft_weight=0.5)(one_pair(-8.0, -8.0, 4, 4))
    assert out.loss.item() == pytest.approx(math.log(2) + 1.0, abs=1e-15)


def test_large_magnitudes_stay_finite():
    out = CPO(beta=0.1, sft_weight=0.0)(one_pair(-1e5, 0.0, 5, 5))
    assert out.loss.item() == pytest.approx(1e4)


@pytest.mark.parametrize("kwargs", [{"beta": 0.1}, {"beta": 0.05, "sft_weight": 0.3, "label_smoothing": 0.2}])
def test_gradcheck(kwargs):
    assert gradcheck_loss(CPO(**kwargs), random_pairs(5, seed=23))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"beta": -1.0}, "loss.beta"),
        ({"sft_weight": -1.0}, "loss.sft_weight"),
        ({"sft_weight": float("nan")}, "loss.sft_weight"),
        ({"label_smoothing": 0.7}, "loss.label_smoothing"),
    ],
)
def test_bad_keys_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        CPO(**kwargs)


def test_declares_no_reference():
    assert not CPO.needs_reference and not CPO.needs_kl_pairs
