"""Generation engines: they take prompts as token ids (each starting with its one BOS) and return sampled ids.

``HFEngine`` runs Hugging Face ``generate`` on left-padded batches with the KV cache; ``VllmEngine`` runs vLLM
(GPU machines, when installed; not exercised by the CPU tests). Both decode with exactly the settings given: top-k
is off and no repetition penalty is added, whatever the model's ``generation_config.json`` says.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import PreTrainedModel

from simpo.errors import UserError
from simpo.models.decoding import Decoding

BACKENDS = ("auto", "hf", "vllm")


@dataclass(frozen=True)
class Sample:
    """One sampled response: its token ids (stop token excluded) and whether a stop token ended it (``False``: cut
    at ``max_new_tokens``)."""

    ids: list[int]
    finished: bool


class Engine(Protocol):
    def generate(self, prompts: list[list[int]], decoding: Decoding, seed: int) -> list[Sample]:
        """One sample per prompt (token ids), reproducible for the same prompts, decoding and seed."""
        ...


def cut_at_stop(ids: list[int], stops: tuple[int, ...]) -> Sample:
    """The ids before the first stop token, and whether there was one."""
    for position, token in enumerate(ids):
        if token in stops:
            return Sample(ids[:position], True)
    return Sample(ids, False)


def resolve_backend(backend: str, has_model_dir: bool) -> str:
    """``hf`` or ``vllm`` for ``generate.backend``: ``auto`` is vLLM when it is installed, a GPU is visible and the
    policy is a Hugging Face directory or hub id (vLLM loads it itself), else ``hf``.

    Raises:
        ValueError: ``vllm`` asked for without vLLM installed or without ``model.name_or_path``.
    """
    installed = importlib.util.find_spec("vllm") is not None
    if backend == "auto":
        return "vllm" if installed and torch.cuda.is_available() and has_model_dir else "hf"
    if backend == "vllm" and not installed:
        raise UserError("generate.backend=vllm needs vLLM (pip install vllm, on a GPU machine); or use hf")
    if backend == "vllm" and not has_model_dir:
        raise UserError("generate.backend=vllm needs model.name_or_path (a Hugging Face directory or hub id)")
    return backend


class HFEngine:
    """Hugging Face ``generate``: prompts sorted by length (less padding), left-padded batches of ``batch_size``,
    KV cache on; ``on_batch(prompts, new_tokens)`` is called after each batch (progress and tokens/s)."""

    def __init__(
        self,
        model: PreTrainedModel,
        pad_id: int,
        batch_size: int,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.model, self.pad_id, self.batch_size, self.on_batch = model, pad_id, batch_size, on_batch

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], decoding: Decoding, seed: int) -> list[Sample]:
        torch.manual_seed(seed)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        samples: list[Sample | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            new = self._batch([prompts[i] for i in chunk], decoding)
            for i, sample in zip(chunk, new, strict=True):
                samples[i] = sample
            if self.on_batch is not None:
                self.on_batch(len(chunk), sum(len(s.ids) + s.finished for s in new))
        return samples  # type: ignore[return-value]

    def _batch(self, batch: list[list[int]], decoding: Decoding) -> list[Sample]:
        width = max(len(ids) for ids in batch)
        device = self.model.device
        input_ids = torch.tensor([[self.pad_id] * (width - len(ids)) + ids for ids in batch], device=device)  # (B, T)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device)  # (B, T)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": decoding.temperature, "top_p": decoding.top_p, "top_k": 0}
            if decoding.temperature > 0
            else {"do_sample": False}
        )
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=decoding.max_new_tokens,
            eos_token_id=list(decoding.stop_token_ids),
            pad_token_id=self.pad_id,
            use_cache=True,
            repetition_penalty=1.0,
            **sampling,
        )  # (B, T + new)
        return [cut_at_stop(row, decoding.stop_token_ids) for row in output[:, width:].tolist()]


class VllmEngine:
    """vLLM with one seed per request (``seed + i``), so a sample does not depend on how requests are batched.
    Untested here (no vLLM on the CPU test machine)."""

    def __init__(self, model_dir: str, dtype: str, on_batch: Callable[[int, int], None] | None = None) -> None:
        from vllm import LLM

        self.llm = LLM(model=model_dir, dtype=dtype)
        self.on_batch = on_batch

    def generate(self, prompts: list[list[int]], decoding: Decoding, seed: int) -> list[Sample]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                temperature=decoding.temperature,
                top_p=decoding.top_p,
                max_tokens=decoding.max_new_tokens,
                stop_token_ids=list(decoding.stop_token_ids),
                seed=seed + i,
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
        samples = []
        for out in outputs:
            sample = cut_at_stop(list(out.outputs[0].token_ids), decoding.stop_token_ids)
            samples.append(Sample(sample.ids, sample.finished or out.outputs[0].finish_reason == "stop"))
        if self.on_batch is not None:
            self.on_batch(len(prompts), sum(len(s.ids) + s.finished for s in samples))
        return samples
