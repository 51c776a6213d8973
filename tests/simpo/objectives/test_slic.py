"""SLiC-HF objective: float64 reference, hand values, gradcheck, key errors, edge cases."""

from __future__ import annotations

import pytest
from pair_cases import Pairs, assert_matches, gradcheck_loss, one_pair, random_pairs, token_mean_nll

from simpo.objectives import SLiC


def reference(p: Pairs, delta: float, sft_weight: float) -> dict:
    losses = [max(0.0, delta - w + lo) for w, lo in zip(p.sum_w, p.sum_l, strict=True)]
    return {
        "losses": losses,
        "loss": sum(losses) / len(losses) + sft_weight * token_mean_nll(p),
        "rewards_w": list(p.sum_w),
        "rewards_l": list(p.sum_l),
    }


@pytest.mark.parametrize(("delta", "sft_weight"), [(0.1, 0.1), (1.0, 1.0), (2.0, 10.0), (0.5, 0.0), (0.0, 0.5)])
def test_matches_float64_reference(delta, sft_weight):
    p = random_pairs(16, seed=71, per_token_scale=0.3)  # margins of a few nats: both sides of the hinge
    out = SLiC(delta=delta, sft_weight=sft_weight)(p.stats(long_counts=True))
    ref = reference(p, delta, sft_weight)
    assert 0 < sum(v == 0 for v in ref["losses"]) < 16
    assert_matches(out, ref["losses"], ref["loss"], ref["rewards_w"], ref["rewards_l"])


def test_hand_computed():
    # Sums w -10 (5 tokens), l -9.5: max(0, 1 + 10 - 9.5) = 1.5; NLL 10 / 5 = 2; lambda 0.5: 1.5 + 1 = 2.5.
    out = SLiC(delta=1.0, sft_weight=0.5)(one_pair(-10.0, -9.5, 5, 4))
    assert out.losses.item() == 1.5 and out.loss.item() == 2.5
    assert out.chosen_rewards.item() == -10.0 and out.rejected_rewards.item() == -9.5
    # Chosen ahead by more than delta: no preference loss, only the NLL.
    assert SLiC(delta=1.0, sft_weight=0.5)(one_pair(-10.0, -11.5, 5, 4)).loss.item() == 1.0


def test_equal_responses_cost_delta():
    out = SLiC(delta=2.0, sft_weight=0.0)(one_pair(-7.0, -7.0, 7, 7))
    assert out.loss.item() == 2.0


def test_large_magnitudes_stay_finite():
    assert SLiC(delta=1.0, sft_weight=1.0)(one_pair(-1e6, 0.0, 10, 10)).loss.item() == pytest.approx(1e6 + 1 + 1e5)


@pytest.mark.parametrize("kwargs", [{"delta": 1.0, "sft_weight": 0.5}, {"delta": 0.1, "sft_weight": 10.0}])
def test_gradcheck(kwargs):
    assert gradcheck_loss(SLiC(**kwargs), random_pairs(5, seed=31, per_token_scale=0.3))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"delta": -0.1}, "loss.delta"), ({"delta": None}, "loss.delta"), ({"sft_weight": -1}, "loss.sft_weight")],
)
def test_bad_keys_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        SLiC(**kwargs)


def test_declares_no_reference():
    assert not SLiC.needs_reference and not SLiC.needs_kl_pairs
