"""The one device resolution: evaluate.py's and sample.py's ``device`` and train.py's ``trainer.accelerator``."""

from __future__ import annotations

import pytest
import torch

from simpo.core.device import resolve_device, training_device
from simpo.errors import UserError

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a GPU does")


def test_auto_and_cpu_resolve_to_cpu_without_a_gpu():
    assert resolve_device("auto") == resolve_device("cpu") == "cpu"
    assert training_device("auto") == training_device("cpu") == "cpu"


REFUSED = [
    (lambda: resolve_device("cuda"), "device", "cuda"),
    (lambda: resolve_device("cuda", key="judge.device"), "judge.device", "cuda"),
    (lambda: training_device("gpu"), "trainer.accelerator", "gpu"),
    (lambda: training_device("cuda"), "trainer.accelerator", "cuda"),
]


@pytest.mark.parametrize(("call", "key", "value"), REFUSED)
def test_cuda_without_a_gpu_is_refused_naming_the_key_and_the_value_as_given(call, key, value):
    expected = rf"^{key}={value} but no CUDA GPU is visible here: use {key}=auto or {key}=cpu"
    with pytest.raises(UserError, match=expected):
        call()


def test_an_unknown_device_names_the_key_and_the_choices():
    with pytest.raises(UserError, match=r"device.*'gpu'|device.*auto.*cpu.*cuda"):
        resolve_device("gpu")
    assert training_device("mps") == "cpu"  # Lightning's other accelerators are Lightning's to check
