"""KTO objective: float64 reference, hand values, gradcheck, key errors, the detached reference point."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from pair_cases import Pairs, assert_matches, gradcheck_loss, one_pair, random_pairs, sigmoid, with_kl_pairs

from simpo.objectives import KTO


def reference(p: Pairs, beta: float, lam_d: float, lam_u: float) -> dict:
    z0 = max(0.0, sum(k - r for k, r in zip(p.kl, p.ref_kl, strict=True)) / len(p.kl))
    ratio_w = [s - r for s, r in zip(p.sum_w, p.ref_w, strict=True)]
    ratio_l = [s - r for s, r in zip(p.sum_l, p.ref_l, strict=True)]
    # The mean over the 2B examples of lambda_y - v(x, y).
    examples = [lam_d - lam_d * sigmoid(beta * (w - z0)) for w in ratio_w]
    examples += [lam_u - lam_u * sigmoid(beta * (z0 - lo)) for lo in ratio_l]
    b = len(ratio_w)
    return {
        "losses": [(examples[i] + examples[b + i]) / 2 for i in range(b)],
        "loss": sum(examples) / (2 * b),
        "rewards_w": [beta * w for w in ratio_w],
        "rewards_l": [beta * v for v in ratio_l],
        "kl": z0,
    }


@pytest.mark.parametrize(
    ("beta", "lam_d", "lam_u"), [(0.1, 1.0, 1.0), (0.01, 1.0, 1.0), (0.05, 1.33, 1.0), (0.5, 1, 2)]
)
@pytest.mark.parametrize("seed", [92, 91])
def test_matches_float64_reference(beta, lam_d, lam_u, seed):
    p = random_pairs(16, seed=seed)
    out = KTO(beta=beta, desirable_weight=lam_d, undesirable_weight=lam_u)(p.stats(long_counts=True))
    ref = reference(p, beta, lam_d, lam_u)
    assert_matches(out, ref["losses"], ref["loss"], ref["rewards_w"], ref["rewards_l"])
    assert out.metrics["kl"].item() == pytest.approx(ref["kl"], rel=1e-13, abs=0)


def test_seeds_cover_both_sides_of_the_kl_clamp():
    assert reference(random_pairs(16, seed=92), 0.1, 1, 1)["kl"] > 0
    assert reference(random_pairs(16, seed=91), 0.1, 1, 1)["kl"] == 0


def test_hand_computed():
    # Ratios +2 (w: -10 vs -12) and -5 (l: -20 vs -15). Mismatched pairs: policy (-30, -20), reference (-33, -21):
    # log ratios 3 and 1, z0 = max(0, 2) = 2. beta 0.1: loss_w = 1 - sigmoid(0.1 * (2 - 2)) = 0.5;
    # loss_l = 1 - sigmoid(0.1 * (2 + 5)) = 1 - 0.6681877721681662 = 0.3318122278318338; mean 0.4159061139159169.
    stats = with_kl_pairs(one_pair(-10.0, -20.0, 5, 5, ref_w=-12.0, ref_l=-15.0), [-30.0, -20.0], [-33.0, -21.0])
    out = KTO(beta=0.1)(stats)
    assert out.metrics["kl"].item() == 2.0
    assert out.loss.item() == pytest.approx(0.4159061139159169, abs=1e-15)
    assert out.chosen_rewards.item() == pytest.approx(0.2) and out.rejected_rewards.item() == pytest.approx(-0.5)
    # desirable_weight 2: (2 * 0.5 + 0.3318...) / 2 = 0.6659061139159169.
    assert KTO(beta=0.1, desirable_weight=2.0)(stats).loss.item() == pytest.approx(0.6659061139159169, abs=1e-15)
    # A negative KL estimate is clamped to 0: loss_w = 1 - sigmoid(0.2), loss_l = 1 - sigmoid(0.5).
    clamped = KTO(beta=0.1)(with_kl_pairs(stats, [-30.0], [-28.0]))
    assert clamped.metrics["kl"].item() == 0.0
    assert clamped.loss.item() == pytest.approx((2 - sigmoid(0.2) - sigmoid(0.5)) / 2, abs=1e-15)


def test_equal_responses_at_the_reference():
    # r = 0 and z0 = 0: each example costs lambda_y / 2: (1.5 * 0.5 + 1 * 0.5) / 2 = 0.625.
    stats = with_kl_pairs(one_pair(-5.0, -5.0, 5, 5, ref_w=-5.0, ref_l=-5.0), [-9.0], [-9.0])
    assert KTO(beta=0.1, desirable_weight=1.5)(stats).loss.item() == pytest.approx(0.625, abs=1e-15)


def test_large_magnitudes_stay_finite():
    stats = with_kl_pairs(one_pair(-1e6, 0.0, 5, 5, ref_w=0.0, ref_l=-1e6), [0.0], [-1e6])
    # r_w = -1e6, r_l = +1e6, z0 = 1e6: loss_w = 1 - sigmoid(-2e5) = 1, loss_l = 1 - sigmoid(0) = 0.5; mean 0.75.
    out = KTO(beta=0.1)(stats)
    assert out.loss.item() == pytest.approx(0.75) and math.isfinite(out.metrics["kl"].item())


def test_reference_point_carries_no_gradient():
    stats = random_pairs(4, seed=5).stats(requires_grad=True)
    KTO(beta=0.1)(stats).loss.backward()
    assert stats.kl_logp_sum.grad is None
    assert stats.chosen_logp_sum.grad is not None and stats.chosen_logp_sum.grad.abs().sum() > 0


def test_missing_inputs_are_clear_errors():
    stats = random_pairs(3, seed=0).stats()
    with pytest.raises(ValueError, match="kl_logp_sum"):
        KTO()(replace(stats, kl_logp_sum=None))
    with pytest.raises(ValueError, match="reference"):
        KTO()(replace(stats, ref_chosen_logp_sum=None))


@pytest.mark.parametrize("kwargs", [{"beta": 0.1}, {"beta": 0.5, "desirable_weight": 1.33, "undesirable_weight": 0.7}])
def test_gradcheck(kwargs):
    assert gradcheck_loss(KTO(**kwargs), random_pairs(5, seed=92))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"beta": 0.0}, "loss.beta"),
        ({"desirable_weight": 0.0}, "loss.desirable_weight"),
        ({"undesirable_weight": -1.0}, "loss.undesirable_weight"),
        ({"undesirable_weight": "1"}, "loss.undesirable_weight"),
    ],
)
def test_bad_keys_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        KTO(**kwargs)


def test_declares_a_reference_and_kl_pairs():
    assert KTO.needs_reference and KTO.needs_kl_pairs
