"""IPO objective: float64 reference, hand values, gradcheck, key errors, edge cases."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pair_cases import Pairs, assert_matches, gradcheck_loss, one_pair, random_pairs

from simpo.objectives import IPO


def reference(p: Pairs, tau: float) -> dict:
    ratio_w = [s - r for s, r in zip(p.sum_w, p.ref_w, strict=True)]
    ratio_l = [s - r for s, r in zip(p.sum_l, p.ref_l, strict=True)]
    losses = [(w - lo - 1 / (2 * tau)) ** 2 for w, lo in zip(ratio_w, ratio_l, strict=True)]
    return {
        "losses": losses,
        "loss": sum(losses) / len(losses),
        "rewards_w": [tau * w for w in ratio_w],
        "rewards_l": [tau * v for v in ratio_l],
    }


@pytest.mark.parametrize("tau", [0.01, 0.1, 0.5, 1.0])
def test_matches_float64_reference(tau):
    p = random_pairs(16, seed=31)
    out = IPO(tau=tau)(p.stats(long_counts=True))
    ref = reference(p, tau)
    assert_matches(out, ref["losses"], ref["loss"], ref["rewards_w"], ref["rewards_l"])


def test_hand_computed():
    # log pi: w -10, l -20; log pi_ref: w -12, l -15: ratios +2 and -5, h = 7; tau 0.5: target 1/(2*0.5) = 1,
    # loss = (7 - 1)^2 = 36; rewards 0.5 * 2 = 1 and 0.5 * -5 = -2.5.
    out = IPO(tau=0.5)(one_pair(-10.0, -20.0, 5, 5, ref_w=-12.0, ref_l=-15.0))
    assert out.loss.item() == 36.0
    assert out.chosen_rewards.item() == 1.0 and out.rejected_rewards.item() == -2.5


def test_summed_not_per_token_margin():
    # The paper's form: the same sums over 5 or 500 tokens give the same loss (TRL's per-token form would not).
    a = IPO(tau=0.5)(one_pair(-10.0, -20.0, 5, 5, ref_w=-12.0, ref_l=-15.0)).loss.item()
    b = IPO(tau=0.5)(one_pair(-10.0, -20.0, 500, 500, ref_w=-12.0, ref_l=-15.0)).loss.item()
    assert a == b == 36.0


def test_equal_responses_cost_the_squared_target():
    # h = 0: loss = (1/(2*0.1))^2 = 25.
    out = IPO(tau=0.1)(one_pair(-7.0, -7.0, 3, 3, ref_w=-7.0, ref_l=-7.0))
    assert out.loss.item() == pytest.approx(25.0, rel=1e-15)


def test_large_magnitudes_stay_finite():
    out = IPO(tau=0.01)(one_pair(-1e5, 0.0, 5, 5, ref_w=0.0, ref_l=-1e5))  # h = -2e5, target 50
    assert out.loss.item() == pytest.approx((2e5 + 50) ** 2)


def test_missing_reference_is_a_clear_error():
    with pytest.raises(ValueError, match="reference"):
        IPO()(replace(random_pairs(2, seed=0).stats(), ref_rejected_logp_sum=None))


@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_gradcheck(tau):
    assert gradcheck_loss(IPO(tau=tau), random_pairs(5, seed=17))


@pytest.mark.parametrize("tau", [0.0, -0.1, "0.1", float("inf"), None])
def test_bad_tau_names_the_key(tau):
    with pytest.raises(ValueError, match=r"loss\.tau"):
        IPO(tau=tau)


def test_declares_a_reference():
    assert IPO.needs_reference and not IPO.needs_kl_pairs
