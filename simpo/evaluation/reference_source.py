"""The reference model of an evaluated policy whose objective needs one (DPO, IPO, R-DPO, KTO).

``reference.name_or_path`` when given, else the one its training run used: a checkpoint's config names its
``reference.name_or_path``, or its initial policy (pretrained, or random-initialised with the run's seed).
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from simpo.errors import UserError
from simpo.loading.policy_source import build_model_policy
from simpo.objectives import Objective
from simpo.reference.provider import ModelReference


def evaluation_reference(
    objective: Objective,
    name_or_path: str | None,
    training_config: dict[str, Any] | None,
    tokenizer: PreTrainedTokenizerBase,
    dtype: str,
    attn_implementation: str = "auto",
    layout: str = "padded",
) -> ModelReference | None:
    """A ``reference=model`` provider for ``objective``, or ``None`` when it needs no reference; its model is built
    with the policy's ``dtype``, ``attn_implementation`` and batch ``layout``.

    Raises:
        ValueError: the objective needs a reference that cannot be found (an ``hf/`` export carries no training
            config): names ``reference.name_or_path``.
    """
    if not objective.needs_reference:
        return None
    trained = training_config or {}
    name = name_or_path or (trained.get("reference") or {}).get("name_or_path")
    model_cfg = trained.get("model") or {}
    if name is None and not trained:
        raise UserError(
            f"loss={type(objective).__name__} measures the policy against its reference: set reference.name_or_path "
            "(the model it was trained from), or evaluate the run's checkpoint (ckpt_path=...) whose config names it"
        )

    def factory() -> PreTrainedModel:
        settings = {"dtype": dtype, "attn_implementation": attn_implementation}
        if name is not None:
            return build_model_policy({"name_or_path": name, **settings}, tokenizer, layout=layout)
        # the run's initial policy: its pretrained weights, or its random initialisation rebuilt from its seed
        return build_model_policy({**model_cfg, **settings}, tokenizer, seed=trained.get("seed"), layout=layout)

    return ModelReference(factory)
