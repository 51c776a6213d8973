"""R-DPO objective: float64 reference, hand values, gradcheck, key errors, edge cases."""

from __future__ import annotations

import math

import pytest
from pair_cases import Pairs, assert_matches, gradcheck_loss, log_sigmoid, one_pair, random_pairs

from simpo.objectives import DPO, RDPO


def reference(p: Pairs, beta: float, alpha: float, eps: float) -> dict:
    ratio_w = [s - r for s, r in zip(p.sum_w, p.ref_w, strict=True)]
    ratio_l = [s - r for s, r in zip(p.sum_l, p.ref_l, strict=True)]
    losses = []
    for w, lo, n_w, n_l in zip(ratio_w, ratio_l, p.n_w, p.n_l, strict=True):
        x = beta * w - beta * lo + (alpha * n_w - alpha * n_l)
        losses.append(-(1 - eps) * log_sigmoid(x) - eps * log_sigmoid(-x))
    return {
        "losses": losses,
        "loss": sum(losses) / len(losses),
        "rewards_w": [beta * w for w in ratio_w],
        "rewards_l": [beta * v for v in ratio_l],
    }


@pytest.mark.parametrize(
    ("beta", "alpha", "eps"), [(0.01, 0.05, 0.0), (0.1, 0.5, 0.0), (0.05, 1.0, 0.2), (0.1, 0.0, 0.0)]
)
@pytest.mark.parametrize("long_counts", [False, True])
def test_matches_float64_reference(beta, alpha, eps, long_counts):
    p = random_pairs(16, seed=41)
    out = RDPO(beta=beta, alpha=alpha, label_smoothing=eps)(p.stats(long_counts=long_counts))
    ref = reference(p, beta, alpha, eps)
    assert_matches(out, ref["losses"], ref["loss"], ref["rewards_w"], ref["rewards_l"])


def test_hand_computed():
    # Ratios +2 (w: -10 vs -12) and -5 (l: -20 vs -15); beta 0.1: 0.2 + 0.5 = 0.7; |y_w| = 10, |y_l| = 4:
    # + 0.05 * (10 - 4) = 0.3, argument 1.0, loss = log(1 + e^-1) = 0.31326168751822286; rewards 0.2 and -0.5.
    out = RDPO(beta=0.1, alpha=0.05)(one_pair(-10.0, -20.0, 10, 4, ref_w=-12.0, ref_l=-15.0))
    assert out.loss.item() == pytest.approx(0.31326168751822286, abs=1e-15)
    assert out.chosen_rewards.item() == pytest.approx(0.2) and out.rejected_rewards.item() == pytest.approx(-0.5)


def test_length_term_sign_and_alpha_zero_is_dpo():
    stats = one_pair(-10.0, -20.0, 10, 4, ref_w=-12.0, ref_l=-15.0)
    dpo = DPO(beta=0.1)(stats).loss.item()
    assert RDPO(beta=0.1, alpha=0.0)(stats).loss.item() == dpo
    # A longer chosen response lowers the loss (its preference is partly explained by length) ...
    assert RDPO(beta=0.1, alpha=0.05)(stats).loss.item() < dpo
    # ... and a longer rejected one raises it.
    assert RDPO(beta=0.1, alpha=0.05)(one_pair(-10.0, -20.0, 4, 10, ref_w=-12.0, ref_l=-15.0)).loss.item() > dpo


def test_equal_responses_give_log_2():
    out = RDPO(beta=0.1, alpha=0.5)(one_pair(-10.0, -10.0, 6, 6, ref_w=-10.0, ref_l=-10.0))
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-15)


def test_large_magnitudes_stay_finite():
    out = RDPO(beta=0.1, alpha=1.0)(one_pair(-1e5, 0.0, 1, 10**6, ref_w=0.0, ref_l=-1e5))
    assert out.loss.item() == pytest.approx(2e4 + 1e6 - 1)


@pytest.mark.parametrize("kwargs", [{"beta": 0.1, "alpha": 0.05}, {"beta": 0.05, "alpha": 0.5, "label_smoothing": 0.1}])
def test_gradcheck(kwargs):
    assert gradcheck_loss(RDPO(**kwargs), random_pairs(5, seed=19))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"beta": 0.0}, "loss.beta"),
        ({"alpha": -0.05}, "loss.alpha"),
        ({"alpha": "x"}, "loss.alpha"),
        ({"label_smoothing": 0.5}, "loss.label_smoothing"),
    ],
)
def test_bad_keys_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        RDPO(**kwargs)


def test_declares_a_reference():
    assert RDPO.needs_reference and not RDPO.needs_kl_pairs
