"""The reward model that judges answers (``evaluate.py``'s ``judge`` task) and scores samples (``sample.py``): any
``AutoModelForSequenceClassification`` checkpoint, refused when it would score with meaningless numbers."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig

from simpo.errors import UserError
from simpo.models.pretrained_source import check_pretrained_source
from simpo.models.weights import refuse_nonfinite


def check_reward_architecture(config: PretrainedConfig, name_or_path: str, key: str = "judge.reward_model") -> None:
    """Refuse a checkpoint that is not a sequence-classification (reward) model, judging by its config: its
    ``architectures`` must include a ``*ForSequenceClassification`` class, or its ``auto_map`` a custom
    ``AutoModelForSequenceClassification`` (ArmoRM). A config that names no architecture is left to the
    weights check of ``RewardModel``.

    Raises:
        ValueError: naming ``key`` (judge.reward_model) and the architectures found.
    """
    architectures = list(getattr(config, "architectures", None) or [])
    custom = "AutoModelForSequenceClassification" in (getattr(config, "auto_map", None) or {})
    if architectures and not custom and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise UserError(
            f"{key}={name_or_path} is not a reward model: its config.json names architectures "
            f"{architectures}, none of them *ForSequenceClassification, so its score head would be randomly "
            "initialised and every win rate meaningless. Give a sequence-classification checkpoint (num_labels=1)"
        )


class RewardModel:
    """Any ``AutoModelForSequenceClassification`` whose first output (or ``.score``, as ArmoRM returns) rates
    a (prompt, response) conversation; custom model code only with ``trust_remote_code``.

    Loading refuses, naming judge.reward_model, what would score with meaningless numbers: a checkpoint that
    is not a sequence-classification model (e.g. a causal LM), one whose weights lack parameters the model
    needs (the score head would be freshly initialised), and weights holding NaN or Inf.
    """

    def __init__(
        self,
        name_or_path: str,
        trust_remote_code: bool = False,
        device: str = "cpu",
        key: str = "judge.reward_model",
        dtype: torch.dtype | None = None,
    ) -> None:
        """``key`` is the config key named in errors; ``dtype`` the weights' dtype (``None``: the checkpoint's)."""
        check_pretrained_source(name_or_path, key)
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        check_reward_architecture(config, name_or_path, key)
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            name_or_path,
            config=config,
            trust_remote_code=trust_remote_code,
            output_loading_info=True,
            **({"dtype": dtype} if dtype is not None else {}),
        )
        fresh = sorted(info["missing_keys"]) + sorted(str(key) for key in info["mismatched_keys"])
        if fresh:
            raise UserError(
                f"{key}={name_or_path}: the checkpoint lacks weights of the "
                f"{type(model).__name__} it loads as ({', '.join(fresh[:5])}{', ...' if len(fresh) > 5 else ''}), "
                "so they would be freshly initialised and every win rate meaningless. Give a trained "
                "sequence-classification (reward) model"
            )
        refuse_nonfinite(model, f"{key}={name_or_path}")
        self.model = model.eval()
        self.to(device)

    def to(self, device: str) -> RewardModel:
        """Move the reward model to ``device`` (``cpu`` | ``cuda``); returns itself."""
        self.model.to(device)
        self.device = device
        return self

    @torch.no_grad()
    def score(self, prompt: str, response: str) -> float:
        """The reward of ``response`` to ``prompt`` (one conversation, chat-templated when possible)."""
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        else:
            ids = self.tokenizer(f"{prompt}\n\n{response}", return_tensors="pt")["input_ids"]
        output = self.model(input_ids=ids.to(self.device))
        value = output.score if hasattr(output, "score") else output.logits
        return float(value.reshape(-1)[0])
