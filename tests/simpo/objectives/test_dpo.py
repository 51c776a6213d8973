"""DPO objective: float64 reference, hand values, gradcheck, key errors, edge cases."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from pair_cases import Pairs, assert_matches, gradcheck_loss, log_sigmoid, one_pair, random_pairs

from simpo.objectives import DPO


def reference(p: Pairs, beta: float, eps: float, loss_type: str) -> dict:
    ratio_w = [s - r for s, r in zip(p.sum_w, p.ref_w, strict=True)]
    ratio_l = [s - r for s, r in zip(p.sum_l, p.ref_l, strict=True)]
    losses = []
    for w, lo in zip(ratio_w, ratio_l, strict=True):
        x = beta * w - beta * lo
        losses.append(-(1 - eps) * log_sigmoid(x) - eps * log_sigmoid(-x) if loss_type == "sigmoid" else max(0, 1 - x))
    return {
        "losses": losses,
        "loss": sum(losses) / len(losses),
        "rewards_w": [beta * w for w in ratio_w],
        "rewards_l": [beta * v for v in ratio_l],
    }


@pytest.mark.parametrize(
    ("beta", "eps", "loss_type"),
    [(0.01, 0.0, "sigmoid"), (0.1, 0.0, "sigmoid"), (0.5, 0.2, "sigmoid"), (0.1, 0.0, "hinge"), (1.0, 0.0, "hinge")],
)
def test_matches_float64_reference(beta, eps, loss_type):
    p = random_pairs(16, seed=21)
    out = DPO(beta=beta, label_smoothing=eps, loss_type=loss_type)(p.stats(long_counts=True))
    ref = reference(p, beta, eps, loss_type)
    assert_matches(out, ref["losses"], ref["loss"], ref["rewards_w"], ref["rewards_l"])
    assert out.metrics == {}


def test_hand_computed():
    # log pi: w -10, l -20; log pi_ref: w -12, l -15. Ratios +2 and -5, h = 7; beta 0.1: 0.7.
    # loss = log(1 + e^-0.7) = 0.40318604888545784; rewards 0.2 and -0.5.
    out = DPO(beta=0.1)(one_pair(-10.0, -20.0, 5, 5, ref_w=-12.0, ref_l=-15.0))
    assert out.loss.item() == pytest.approx(0.40318604888545784, abs=1e-15)
    assert out.chosen_rewards.item() == pytest.approx(0.2) and out.rejected_rewards.item() == pytest.approx(-0.5)
    # cDPO eps 0.25: 0.75 * 0.403186... + 0.25 * log(1 + e^0.7) (= 1.10318604888545784) = 0.57818604888545784.
    smoothed = DPO(beta=0.1, label_smoothing=0.25)(one_pair(-10.0, -20.0, 5, 5, ref_w=-12.0, ref_l=-15.0))
    assert smoothed.loss.item() == pytest.approx(0.57818604888545784, abs=1e-15)
    # hinge: relu(1 - 0.7) = 0.3.
    hinge = DPO(beta=0.1, loss_type="hinge")(one_pair(-10.0, -20.0, 5, 5, ref_w=-12.0, ref_l=-15.0))
    assert hinge.loss.item() == pytest.approx(0.3, abs=1e-15)


def test_token_counts_do_not_enter():
    # DPO reads summed log-probs only: the same sums over 5 or 50 tokens give the same loss.
    short = DPO(beta=0.1)(one_pair(-10.0, -20.0, 5, 5, ref_w=-12.0, ref_l=-15.0)).loss.item()
    long = DPO(beta=0.1)(one_pair(-10.0, -20.0, 50, 50, ref_w=-12.0, ref_l=-15.0)).loss.item()
    assert short == long  # token counts do not enter DPO at all


def test_policy_equal_to_reference_gives_log_2():
    out = DPO(beta=0.1)(one_pair(-10.0, -20.0, 5, 5, ref_w=-10.0, ref_l=-20.0))
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-15)
    assert out.chosen_rewards.item() == 0.0 == out.rejected_rewards.item()


def test_large_magnitudes_stay_finite():
    stats = one_pair(-1e5, 0.0, 5, 5, ref_w=0.0, ref_l=-1e5)  # h = -2e5, beta h = -2e4
    out = DPO(beta=0.1)(stats)
    assert out.loss.item() == pytest.approx(2e4)


def test_missing_reference_is_a_clear_error():
    stats = replace(random_pairs(3, seed=0).stats(), ref_chosen_logp_sum=None)
    with pytest.raises(ValueError, match="reference"):
        DPO()(stats)


@pytest.mark.parametrize("kwargs", [{"beta": 0.1}, {"beta": 0.5, "label_smoothing": 0.1}])
def test_gradcheck(kwargs):
    assert gradcheck_loss(DPO(**kwargs), random_pairs(5, seed=13))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"beta": -0.1}, "loss.beta"),
        ({"beta": None}, "loss.beta"),
        ({"label_smoothing": 0.6}, "loss.label_smoothing"),
        ({"loss_type": "hinge", "label_smoothing": 0.1}, "loss.label_smoothing"),
        ({"loss_type": "ipo"}, "loss.loss_type"),
    ],
)
def test_bad_keys_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        DPO(**kwargs)


def test_declares_a_reference():
    assert DPO.needs_reference and not DPO.needs_kl_pairs
