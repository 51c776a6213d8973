"""``nonfinite_tensors``: every NaN / +inf / -inf is found, wherever it sits and whatever the float dtype."""

from __future__ import annotations

import pytest
import torch

from simpo.core.finite import describe_nonfinite, nonfinite_tensors


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_one_bad_value_anywhere_is_found(dtype, value):
    generator = torch.Generator().manual_seed(0)
    for index in (0, 1, 517, 999):  # first, second, middle, last element
        bad = torch.randn(1000, generator=generator).to(dtype)
        bad[index] = value
        good = torch.randn(40, 25, generator=generator).to(dtype)
        assert nonfinite_tensors([("good", good), ("bad", bad.view(40, 25))]) == ["bad"]


def test_agrees_with_elementwise_isfinite_on_mixed_tensors():
    """Against the plain elementwise check, on tensors with sparse bad values of every kind and finite extremes."""
    generator = torch.Generator().manual_seed(1)
    named = []
    for i in range(30):
        t = torch.randn(257, generator=generator) * 1e30  # large but finite values
        for _ in range(i % 3):
            t[int(torch.randint(257, (1,), generator=generator))] = [float("nan"), float("inf"), -float("inf")][i % 3]
        named.append((f"t{i}", t))
    named += [("max", torch.full((3,), torch.finfo(torch.float32).max)), ("empty", torch.empty(0)),
              ("ints", torch.arange(5))]  # fmt: skip
    expected = [name for name, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    assert expected and nonfinite_tensors(named) == expected


def test_describe_lists_a_few_names():
    assert describe_nonfinite(["a", "b"]) == "2 tensors (a, b)"
