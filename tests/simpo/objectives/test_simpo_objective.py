"""SimPO objective: float64 reference, hand values, gradcheck, key errors."""

from __future__ import annotations

import pytest
from pair_cases import Pairs, assert_matches, gradcheck_loss, log_sigmoid, one_pair, random_pairs, token_mean_nll

from simpo.objectives import SimPO


def reference(p: Pairs, beta: float, ratio: float, loss_type: str, eps: float, sft_weight: float) -> dict:
    avg_w = [s / n for s, n in zip(p.sum_w, p.n_w, strict=True)]
    avg_l = [s / n for s, n in zip(p.sum_l, p.n_l, strict=True)]
    losses = []
    for w, lo in zip(avg_w, avg_l, strict=True):
        x = beta * (w - lo - ratio)
        if loss_type == "sigmoid":
            losses.append(-(1 - eps) * log_sigmoid(x) - eps * log_sigmoid(-x))
        else:
            losses.append(max(0.0, 1.0 - x))
    loss = sum(losses) / len(losses) + (sft_weight * token_mean_nll(p) if sft_weight else 0.0)
    return {
        "losses": losses,
        "loss": loss,
        "rewards_w": [beta * w for w in avg_w],
        "rewards_l": [beta * v for v in avg_l],
    }


CONFIGS = [  # beta, gamma_beta_ratio, loss_type, label_smoothing, sft_weight
    (2.0, 0.5, "sigmoid", 0.0, 0.0),
    (2.5, 0.55, "sigmoid", 0.0, 0.0),
    (10.0, 0.3, "sigmoid", 0.1, 0.0),
    (2.5, 0.0, "sigmoid", 0.3, 1.0),
    (2.0, 0.5, "hinge", 0.0, 0.0),
    (10.0, 0.1, "hinge", 0.0, 0.5),
]


@pytest.mark.parametrize(("beta", "ratio", "loss_type", "eps", "sft_weight"), CONFIGS)
@pytest.mark.parametrize("long_counts", [False, True])
def test_matches_float64_reference(beta, ratio, loss_type, eps, sft_weight, long_counts):
    p = random_pairs(16, seed=7)
    out = SimPO(beta, ratio, loss_type, eps, sft_weight)(p.stats(long_counts=long_counts))
    ref = reference(p, beta, ratio, loss_type, eps, sft_weight)
    assert_matches(out, ref["losses"], ref["loss"], ref["rewards_w"], ref["rewards_l"])
    if sft_weight:
        assert out.metrics["sft_loss"].item() == pytest.approx(token_mean_nll(p), rel=1e-13)
    else:
        assert "sft_loss" not in out.metrics


def test_hand_computed():
    # sums -2 / -6 over 2 / 3 tokens: avg_w = -1, avg_l = -2; beta 2, ratio 0.5: beta*z = 2*(-1+2-0.5) = 1,
    # loss = log(1 + e^-1) = 0.31326168751822286; rewards 2*-1 = -2 and 2*-2 = -4.
    out = SimPO(beta=2.0, gamma_beta_ratio=0.5)(one_pair(-2.0, -6.0, 2, 3))
    assert out.loss.item() == pytest.approx(0.31326168751822286, abs=1e-15)
    assert out.chosen_rewards.tolist() == [-2.0] and out.rejected_rewards.tolist() == [-4.0]
    # sft_weight 0.5: NLL = 2/2 = 1, loss = 0.31326... + 0.5.
    assert SimPO(sft_weight=0.5)(one_pair(-2.0, -6.0, 2, 3)).loss.item() == pytest.approx(0.81326168751822286)
    # hinge: relu(1 - 1) = 0.
    assert SimPO(loss_type="hinge")(one_pair(-2.0, -6.0, 2, 3)).loss.item() == 0.0


def test_equal_responses_cost_the_margin():
    # avg_w == avg_l: beta*z = -gamma = -1, loss = log(1 + e) = 1.3132616875182228.
    out = SimPO(beta=2.0, gamma_beta_ratio=0.5)(one_pair(-4.0, -4.0, 4, 4))
    assert out.loss.item() == pytest.approx(1.3132616875182228, abs=1e-15)
    assert out.chosen_rewards.item() == out.rejected_rewards.item()


def test_large_magnitudes_stay_finite():
    # mean log-probs of -1e4 and 0: beta*z = +-2e4; the logistic loss saturates to 0 or 2e4 + 1, never inf/nan.
    stats = one_pair(-1e4, 0.0, 1, 1)
    out = SimPO(beta=2.0, gamma_beta_ratio=0.5)(stats)
    assert out.loss.item() == pytest.approx(2e4 + 1.0)
    out = SimPO(beta=2.0, gamma_beta_ratio=0.5)(one_pair(0.0, -1e4, 1, 1))
    assert out.loss.item() == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [{"beta": 2.0, "gamma_beta_ratio": 0.5}, {"beta": 2.5, "label_smoothing": 0.2, "sft_weight": 0.7}],
)
def test_gradcheck(kwargs):
    assert gradcheck_loss(SimPO(**kwargs), random_pairs(5, seed=11))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"beta": 0.0}, "loss.beta"),
        ({"beta": "2"}, "loss.beta"),
        ({"beta": float("nan")}, "loss.beta"),
        ({"gamma_beta_ratio": float("inf")}, "loss.gamma_beta_ratio"),
        ({"loss_type": "ipo"}, "loss.loss_type"),
        ({"label_smoothing": 0.5}, "loss.label_smoothing"),
        ({"label_smoothing": -0.1}, "loss.label_smoothing"),
        ({"loss_type": "hinge", "label_smoothing": 0.1}, "loss.label_smoothing"),
        ({"sft_weight": -0.1}, "loss.sft_weight"),
        ({"sft_weight": True}, "loss.sft_weight"),
    ],
)
def test_bad_keys_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        SimPO(**kwargs)


def test_declares_no_reference():
    assert not SimPO.needs_reference and not SimPO.needs_kl_pairs
