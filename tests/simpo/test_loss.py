"""SimPOLoss against an independent float64 reference, hand-computed values and gradient checks."""

from __future__ import annotations

import math

import pytest
import torch

from simpo.loss import SimPOLoss


def _log_sigmoid(x: float) -> float:
    """Numerically stable log(sigmoid(x)) in plain Python floats."""
    if x >= 0:
        return -math.log1p(math.exp(-x))
    return x - math.log1p(math.exp(x))


def _sigmoid(x: float) -> float:
    return math.exp(_log_sigmoid(x))


def reference_simpo(
    avg_w: list[float],
    avg_l: list[float],
    beta: float,
    gamma_beta_ratio: float,
    loss_type: str,
    label_smoothing: float,
    sft_weight: float,
    logp_sums: list[float] | None = None,
    token_counts: list[float] | None = None,
) -> dict:
    """SimPO written out pair by pair in Python floats (double precision), independent of the library."""
    losses = []
    for w, lo in zip(avg_w, avg_l, strict=True):
        z = w - lo - gamma_beta_ratio
        if loss_type == "sigmoid":
            eps = label_smoothing
            losses.append(-(1 - eps) * _log_sigmoid(beta * z) - eps * _log_sigmoid(-beta * z))
        else:
            losses.append(max(0.0, 1.0 - beta * z))
    loss = sum(losses) / len(losses)
    sft = None
    if sft_weight > 0:
        sft = -sum(logp_sums) / sum(token_counts)
        loss += sft_weight * sft
    return {
        "loss": loss,
        "losses": losses,
        "chosen_rewards": [beta * w for w in avg_w],
        "rejected_rewards": [beta * lo for lo in avg_l],
        "sft_loss": sft,
    }


def _random_batch(batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 40, (batch,), generator=g).to(torch.float64)
    sums = -torch.rand(batch, generator=g, dtype=torch.float64) * 3.0 * counts
    avg_w = sums / counts
    avg_l = -torch.rand(batch, generator=g, dtype=torch.float64) * 3.0
    return avg_w, avg_l, sums, counts


CONFIGS = [
    # beta, gamma_beta_ratio, label_smoothing, loss_type, sft_weight
    (2.0, 0.5, 0.0, "sigmoid", 0.0),
    (2.5, 0.55, 0.0, "sigmoid", 0.0),
    (10.0, 0.3, 0.0, "sigmoid", 0.0),
    (2.0, 0.8, 0.1, "sigmoid", 0.0),
    (2.5, 0.0, 0.3, "sigmoid", 1.0),
    (2.0, 0.5, 0.0, "sigmoid", 0.25),
    (2.0, 0.5, 0.0, "hinge", 0.0),
    (10.0, 0.1, 0.0, "hinge", 1.0),
    (0.5, 1.0, 0.0, "hinge", 0.0),
]


@pytest.mark.parametrize(("beta", "ratio", "eps", "loss_type", "sft_weight"), CONFIGS)
def test_matches_float64_reference(beta, ratio, eps, loss_type, sft_weight):
    avg_w, avg_l, sums, counts = _random_batch(16, seed=int(beta * 100 + ratio * 10 + eps * 1000 + sft_weight))
    loss_fn = SimPOLoss(
        beta=beta, gamma_beta_ratio=ratio, loss_type=loss_type, label_smoothing=eps, sft_weight=sft_weight
    )
    out = loss_fn(avg_w, avg_l, sums, counts)
    ref = reference_simpo(
        avg_w.tolist(), avg_l.tolist(), beta, ratio, loss_type, eps, sft_weight, sums.tolist(), counts.tolist()
    )

    assert out.losses.dtype == torch.float64
    assert out.losses.shape == (16,)
    assert out.loss.shape == ()
    torch.testing.assert_close(out.loss, torch.tensor(ref["loss"], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.losses, torch.tensor(ref["losses"], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.chosen_rewards, torch.tensor(ref["chosen_rewards"], dtype=torch.float64))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor(ref["rejected_rewards"], dtype=torch.float64))
    if sft_weight > 0:
        assert out.sft_loss is not None
        torch.testing.assert_close(out.sft_loss, torch.tensor(ref["sft_loss"], dtype=torch.float64), rtol=1e-12, atol=0)
    else:
        assert out.sft_loss is None


def test_reference_is_not_trivially_equal_across_configs():
    """Guard: the configs above give different losses, so the parametrized comparison can discriminate."""
    avg_w, avg_l, _, _ = _random_batch(8, seed=0)
    a = SimPOLoss(beta=2.0, gamma_beta_ratio=0.5)(avg_w, avg_l).loss
    b = SimPOLoss(beta=2.0, gamma_beta_ratio=0.0)(avg_w, avg_l).loss
    c = SimPOLoss(beta=2.0, gamma_beta_ratio=0.5, label_smoothing=0.2)(avg_w, avg_l).loss
    assert len({a.item(), b.item(), c.item()}) == 3


def test_hand_computed_sigmoid():
    # beta=2, ratio=0.5, avg_w=-1, avg_l=-2: z = -1 + 2 - 0.5 = 0.5, beta*z = 1, loss = log(1 + e^-1).
    out = SimPOLoss(beta=2.0, gamma_beta_ratio=0.5)(
        torch.tensor([-1.0], dtype=torch.float64), torch.tensor([-2.0], dtype=torch.float64)
    )
    assert out.loss.item() == pytest.approx(0.3132616875182228, abs=1e-15)
    assert out.losses.tolist() == pytest.approx([0.3132616875182228], abs=1e-15)
    assert out.chosen_rewards.tolist() == [-2.0]
    assert out.rejected_rewards.tolist() == [-4.0]
    assert out.sft_loss is None


def test_hand_computed_sigmoid_label_smoothing():
    # Same pair, eps = 0.1: 0.9 * log(1 + e^-1) + 0.1 * log(1 + e^1) = 0.9 * 0.31326... + 0.1 * 1.31326...
    out = SimPOLoss(beta=2.0, gamma_beta_ratio=0.5, label_smoothing=0.1)(
        torch.tensor([-1.0], dtype=torch.float64), torch.tensor([-2.0], dtype=torch.float64)
    )
    assert out.loss.item() == pytest.approx(0.4132616875182228, abs=1e-15)


def test_hand_computed_hinge():
    # Same pair under hinge: relu(1 - 1) = 0; with ratio 0: z = 1, beta*z = 2, relu(-1) = 0;
    # with avg_w = avg_l: z = -0.5, beta*z = -1, relu(2) = 2.
    loss_fn = SimPOLoss(beta=2.0, gamma_beta_ratio=0.5, loss_type="hinge")
    w = torch.tensor([-1.0, -1.0], dtype=torch.float64)
    lo = torch.tensor([-2.0, -1.0], dtype=torch.float64)
    out = loss_fn(w, lo)
    assert out.losses.tolist() == [0.0, 2.0]
    assert out.loss.item() == 1.0


def test_hand_computed_sft_term():
    # sums (-3, -5), counts (2, 6): sft = 8 / 8 = 1.0; avg_w = (-1.5, -5/6).
    sums = torch.tensor([-3.0, -5.0], dtype=torch.float64)
    counts = torch.tensor([2.0, 6.0], dtype=torch.float64)
    avg_w = sums / counts
    avg_l = torch.tensor([-2.0, -2.0], dtype=torch.float64)
    pure = SimPOLoss(beta=2.0, gamma_beta_ratio=0.5)(avg_w, avg_l)
    cpo = SimPOLoss(beta=2.0, gamma_beta_ratio=0.5, sft_weight=0.5)(avg_w, avg_l, sums, counts)
    assert cpo.sft_loss.item() == pytest.approx(1.0, abs=1e-15)
    # Token-mean over the whole batch, not a mean of per-row means (which would be (1.5 + 5/6) / 2).
    assert cpo.sft_loss.item() != pytest.approx((1.5 + 5 / 6) / 2)
    assert cpo.loss.item() == pytest.approx(pure.loss.item() + 0.5, abs=1e-14)
    torch.testing.assert_close(cpo.losses, pure.losses, rtol=0, atol=0)


def test_mean_over_pairs_is_mean_of_losses():
    avg_w, avg_l, _, _ = _random_batch(7, seed=3)
    out = SimPOLoss(beta=2.5, gamma_beta_ratio=0.4)(avg_w, avg_l)
    assert out.loss.item() == pytest.approx(out.losses.sum().item() / 7, rel=1e-14)


def test_default_is_pure_simpo():
    loss_fn = SimPOLoss()
    assert loss_fn.sft_weight == 0.0
    assert loss_fn.loss_type == "sigmoid"
    assert loss_fn.label_smoothing == 0.0
    avg_w, avg_l, sums, counts = _random_batch(4, seed=5)
    # The SFT inputs are ignored by default: no sft term, the loss equals the mean pair loss.
    out = loss_fn(avg_w, avg_l, sums, counts)
    assert out.sft_loss is None
    assert out.loss.item() == pytest.approx(out.losses.mean().item(), rel=1e-15)


def test_rewards_are_detached():
    avg_w = torch.tensor([-1.0, -0.5], dtype=torch.float64, requires_grad=True)
    avg_l = torch.tensor([-2.0, -0.7], dtype=torch.float64, requires_grad=True)
    out = SimPOLoss(beta=2.0)(avg_w, avg_l)
    assert out.loss.requires_grad
    assert not out.chosen_rewards.requires_grad
    assert not out.rejected_rewards.requires_grad


def _loss_fn_of(loss_fn: SimPOLoss, with_sft: bool):
    if with_sft:
        return lambda w, lo, s, c: loss_fn(w, lo, s, c).loss
    return lambda w, lo: loss_fn(w, lo).loss


@pytest.mark.parametrize(
    ("kwargs", "with_sft"),
    [
        ({"beta": 2.0, "gamma_beta_ratio": 0.5}, False),
        ({"beta": 2.5, "gamma_beta_ratio": 0.3, "label_smoothing": 0.2}, False),
        ({"beta": 2.0, "gamma_beta_ratio": 0.5, "sft_weight": 0.7}, True),
    ],
)
def test_gradcheck_sigmoid(kwargs, with_sft):
    avg_w, avg_l, sums, counts = _random_batch(6, seed=11)
    inputs = [avg_w.clone().requires_grad_(), avg_l.clone().requires_grad_()]
    if with_sft:
        inputs += [sums.clone().requires_grad_(), counts.clone().requires_grad_()]
    assert torch.autograd.gradcheck(_loss_fn_of(SimPOLoss(**kwargs), with_sft), tuple(inputs))


def test_gradcheck_hinge_away_from_kink():
    beta = 2.0
    loss_fn = SimPOLoss(beta=beta, gamma_beta_ratio=0.5, loss_type="hinge")
    # beta * z for these pairs: 2*(1.0-0.5)=1.0 would be the kink; pick values well on either side.
    avg_w = torch.tensor([-1.0, -0.2, -3.0, -0.5], dtype=torch.float64)
    avg_l = torch.tensor([-3.0, -0.4, -1.0, -0.6], dtype=torch.float64)
    z = avg_w - avg_l - 0.5
    assert ((1 - beta * z).abs() > 0.1).all()
    assert ((1 - beta * z) > 0).any() and ((1 - beta * z) < 0).any()
    inputs = (avg_w.requires_grad_(), avg_l.requires_grad_())
    assert torch.autograd.gradcheck(_loss_fn_of(loss_fn, False), inputs)


@pytest.mark.parametrize("eps", [0.0, 0.15])
def test_analytic_gradient_sigmoid(eps):
    beta, ratio, batch = 2.5, 0.4, 9
    avg_w, avg_l, _, _ = _random_batch(batch, seed=17)
    avg_w.requires_grad_()
    avg_l.requires_grad_()
    SimPOLoss(beta=beta, gamma_beta_ratio=ratio, label_smoothing=eps)(avg_w, avg_l).loss.backward()
    expected = []
    for w, lo in zip(avg_w.tolist(), avg_l.tolist(), strict=True):
        bz = beta * (w - lo - ratio)
        # d/davg_w of -(1-eps) logsig(bz) - eps logsig(-bz), divided by B for the mean.
        expected.append((-(1 - eps) * beta * _sigmoid(-bz) + eps * beta * _sigmoid(bz)) / batch)
    expected_t = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(avg_w.grad, expected_t, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(avg_l.grad, -expected_t, rtol=1e-12, atol=1e-15)


def test_analytic_gradient_sigmoid_hand_value():
    # beta=2, ratio=0.5, avg_w=-1, avg_l=-2: beta*z = 1, d/davg_w = -2 * sigmoid(-1) / 1.
    avg_w = torch.tensor([-1.0], dtype=torch.float64, requires_grad=True)
    avg_l = torch.tensor([-2.0], dtype=torch.float64, requires_grad=True)
    SimPOLoss(beta=2.0, gamma_beta_ratio=0.5)(avg_w, avg_l).loss.backward()
    assert avg_w.grad.item() == pytest.approx(-0.5378828427399902, abs=1e-15)
    assert avg_l.grad.item() == pytest.approx(0.5378828427399902, abs=1e-15)


def test_analytic_gradient_hinge_and_sft():
    beta, sft_weight = 2.0, 0.5
    sums = torch.tensor([-2.0, -6.0, -1.0], dtype=torch.float64, requires_grad=True)
    counts = torch.tensor([2.0, 3.0, 5.0], dtype=torch.float64)
    avg_w = torch.tensor([-1.0, -0.2, -3.0], dtype=torch.float64, requires_grad=True)
    avg_l = torch.tensor([-3.0, -0.4, -1.0], dtype=torch.float64, requires_grad=True)
    loss_fn = SimPOLoss(beta=beta, gamma_beta_ratio=0.5, loss_type="hinge", sft_weight=sft_weight)
    loss_fn(avg_w, avg_l, sums, counts).loss.backward()
    # 1 - beta*z: 1 - 2*1.5 = -2 (flat), 1 - 2*(-0.3) = 1.6 (active), 1 - 2*(-2.5) = 6 (active).
    expected = torch.tensor([0.0, -beta / 3, -beta / 3], dtype=torch.float64)
    torch.testing.assert_close(avg_w.grad, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(avg_l.grad, -expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(sums.grad, torch.full((3,), -sft_weight / 10.0, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"loss_type": "ipo"},
        {"loss_type": "Sigmoid"},
        {"loss_type": "hinge", "label_smoothing": 0.1},
        {"beta": 0.0},
        {"beta": -1.0},
        {"sft_weight": -0.1},
        {"label_smoothing": 0.5},
        {"label_smoothing": -0.1},
    ],
)
def test_invalid_config_raises(kwargs):
    with pytest.raises(ValueError):
        SimPOLoss(**kwargs)


def test_valid_edge_configs_construct():
    SimPOLoss(loss_type="hinge", label_smoothing=0.0)
    SimPOLoss(label_smoothing=0.49)
    SimPOLoss(beta=1e-6, gamma_beta_ratio=0.0, sft_weight=0.0)


@pytest.mark.parametrize("missing", ["sum", "count", "both"])
def test_sft_without_sums_raises(missing):
    avg_w, avg_l, sums, counts = _random_batch(3, seed=1)
    loss_fn = SimPOLoss(sft_weight=1.0)
    args = {
        "sum": (sums if missing == "count" else None),
        "count": (counts if missing == "sum" else None),
    }
    with pytest.raises(ValueError):
        loss_fn(avg_w, avg_l, args["sum"], args["count"])
