"""What the builders need to know of a Hugging Face causal LM's structure: its decoder layers (the units of FSDP and
of activation checkpointing) and building it with its parameters on the meta device (no memory) for FSDP to fill."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from simpo.errors import UserError


def decoder_layer_classes(model: nn.Module) -> tuple[type[nn.Module], ...]:
    """The module classes named in the model's ``_no_split_modules`` (its decoder layers)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    classes = {type(m) for m in model.modules() if type(m).__name__ in names}
    if not classes:
        raise UserError(
            f"{type(model).__name__} names no decoder layer in _no_split_modules: FSDP cannot find its units"
        )
    return tuple(classes)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create modules with their parameters on the meta device (no memory) and their buffers real.

    Buffers (rotary frequencies, ...) are small and often not in the state dict, so they are computed as
    usual; parameters are filled later by ``materialize``.
    """
    original = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and not param.is_meta:  # a meta parameter (tied weights) keeps its identity
            kind = type(param)
            module._parameters[name] = kind(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]
