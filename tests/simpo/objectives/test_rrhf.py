"""RRHF objective: float64 reference, hand values, gradcheck, key errors, edge cases."""

from __future__ import annotations

import pytest
from pair_cases import Pairs, assert_matches, gradcheck_loss, one_pair, random_pairs, token_mean_nll

from simpo.objectives import RRHF


def reference(p: Pairs, sft_weight: float) -> dict:
    score_w = [s / n for s, n in zip(p.sum_w, p.n_w, strict=True)]
    score_l = [s / n for s, n in zip(p.sum_l, p.n_l, strict=True)]
    losses = [max(0.0, -w + lo) for w, lo in zip(score_w, score_l, strict=True)]
    return {
        "losses": losses,
        "loss": sum(losses) / len(losses) + sft_weight * token_mean_nll(p),
        "rewards_w": score_w,
        "rewards_l": score_l,
    }


@pytest.mark.parametrize("sft_weight", [0.1, 0.5, 1.0, 10.0, 0.0])
def test_matches_float64_reference(sft_weight):
    p = random_pairs(16, seed=81)
    out = RRHF(sft_weight=sft_weight)(p.stats(long_counts=True))
    ref = reference(p, sft_weight)
    assert 0 < sum(v == 0 for v in ref["losses"]) < 16  # both sides of the hinge
    assert_matches(out, ref["losses"], ref["loss"], ref["rewards_w"], ref["rewards_l"])


def test_hand_computed():
    # w: -6 over 3 tokens (score -2); l: -5 over 5 (score -1): max(0, 2 - 1) = 1; NLL 6 / 3 = 2; lambda 1: 3.
    out = RRHF(sft_weight=1.0)(one_pair(-6.0, -5.0, 3, 5))
    assert out.losses.item() == 1.0 and out.loss.item() == 3.0
    assert out.chosen_rewards.item() == -2.0 and out.rejected_rewards.item() == -1.0
    # Length-normalised: the chosen -6 over 6 tokens (score -1) ties the rejected: no ranking loss.
    assert RRHF(sft_weight=0.0)(one_pair(-6.0, -5.0, 6, 5)).loss.item() == 0.0


def test_equal_responses_cost_only_the_nll():
    assert RRHF(sft_weight=0.5)(one_pair(-4.0, -4.0, 2, 2)).loss.item() == 1.0


def test_large_magnitudes_stay_finite():
    assert RRHF(sft_weight=0.0)(one_pair(-1e8, 0.0, 1, 1)).loss.item() == 1e8


@pytest.mark.parametrize("sft_weight", [1.0, 0.1])
def test_gradcheck(sft_weight):
    assert gradcheck_loss(RRHF(sft_weight=sft_weight), random_pairs(6, seed=37))


@pytest.mark.parametrize("sft_weight", [-0.5, "0.5", float("nan")])
def test_bad_weight_names_the_key(sft_weight):
    with pytest.raises(ValueError, match=r"loss\.sft_weight"):
        RRHF(sft_weight=sft_weight)


def test_declares_no_reference():
    assert not RRHF.needs_reference and not RRHF.needs_kl_pairs
