"""Answer benchmark prompts with the policy: chat-templated prompts with exactly one BOS, Hugging Face
``generate`` on left-padded batches (default) or vLLM."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from simpo.errors import UserError
from simpo.evaluation.prompt_sets import Prompt
from simpo.models.decoding import Decoding

BACKENDS = ("hf", "vllm")


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], where: str) -> list[int]:
    """Token ids of ``messages`` with the generation prompt, starting with exactly one BOS and holding no other.

    Raises:
        ValueError: when the ids hold a second BOS (e.g. the prompt text already contains a rendered template,
            or a template and tokenizer that both add BOS); ``where`` names the prompt.
    """
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is None:
        return ids
    if not ids or ids[0] != bos:
        ids = [bos, *ids]
    if ids.count(bos) != 1:
        raise UserError(
            f"{where}: the prompt holds {ids.count(bos)} BOS tokens ({tokenizer.bos_token!r}); a prompt must start "
            "with exactly one. Its text probably already contains a rendered chat template: pass plain text"
        )
    return ids


def check_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt]) -> None:
    """Check the first turn of every prompt (``prompt_ids``'s single-BOS rule) before anything is generated or
    written; later turns, which hold the answers, are checked as they are built."""
    for prompt in prompts:
        prompt_ids(tokenizer, _messages(prompt, [], 0), f"prompt {prompt.key}")


def _hf_generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch: list[list[int]], decoding: Decoding
) -> list[list[int]]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else decoding.stop_token_ids[0]
    width = max(len(ids) for ids in batch)
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=model.device)  # left pad
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=model.device)
    sampling = {"do_sample": True, "temperature": decoding.temperature, "top_p": decoding.top_p}
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=decoding.max_new_tokens,
        eos_token_id=list(decoding.stop_token_ids) or None,
        pad_token_id=pad,
        **(sampling if decoding.temperature > 0 else {"do_sample": False}),
    )
    return [_cut_at_stop(row[width:].tolist(), decoding.stop_token_ids) for row in output]


def _cut_at_stop(ids: list[int], stops: tuple[int, ...]) -> list[int]:
    for i, token in enumerate(ids):
        if token in stops:
            return ids[:i]
    return ids


_VLLM_ENGINES: dict[Path, Any] = {}  # one engine per model directory, reused across turns and batches


def _vllm_generate(model_dir: Path, batch: list[list[int]], decoding: Decoding) -> list[list[int]]:
    try:
        from vllm import LLM, SamplingParams
    except ImportError as error:
        raise ImportError("generate.backend=vllm needs vLLM: pip install vllm (GPU machines)") from error
    if model_dir not in _VLLM_ENGINES:
        _VLLM_ENGINES[model_dir] = LLM(model=str(model_dir))
    llm = _VLLM_ENGINES[model_dir]
    params = SamplingParams(
        temperature=decoding.temperature,
        top_p=decoding.top_p,
        max_tokens=decoding.max_new_tokens,
        stop_token_ids=list(decoding.stop_token_ids),
    )
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in batch], params)
    return [list(out.outputs[0].token_ids) for out in outputs]


@torch.no_grad()
def answer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    decodings: list[Decoding],
    batch_size: int,
    backend: str = "hf",
    model_dir: Path | None = None,
) -> tuple[list[list[str]], list[list[int]]]:
    """Answer every turn of every prompt (turn k sees the earlier turns and answers).

    Returns:
        (answers, token_lens): per prompt, the answer text and its number of tokens for each turn.
    """
    if backend not in BACKENDS:
        raise UserError(f"generate.backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "vllm" and model_dir is None:
        raise UserError("generate.backend=vllm needs the policy as a Hugging Face directory (model.name_or_path)")
    answers: list[list[str]] = [[] for _ in prompts]
    lens: list[list[int]] = [[] for _ in prompts]
    for turn in range(max(len(p.turns) for p in prompts)):
        todo = [i for i, p in enumerate(prompts) if turn < len(p.turns)]
        groups: dict[Decoding, list[int]] = defaultdict(list)
        for i in todo:
            groups[decodings[i]].append(i)
        progress = tqdm(total=len(todo), desc=f"generate turn {turn + 1}", unit="prompt")
        for decoding, members in groups.items():
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                batch = [prompt_ids(tokenizer, _messages(prompts[i], answers[i], turn), f"prompt {prompts[i].key}")
                         for i in chunk]  # fmt: skip
                if backend == "hf":
                    new = _hf_generate(model, tokenizer, batch, decoding)
                else:
                    new = _vllm_generate(model_dir, batch, decoding)  # type: ignore[arg-type]
                for i, ids in zip(chunk, new, strict=True):
                    answers[i].append(tokenizer.decode(ids, skip_special_tokens=True).strip())
                    lens[i].append(len(ids))
                progress.update(len(chunk))
        progress.close()
    return answers, lens


def _messages(prompt: Prompt, answers: list[str], turn: int) -> list[dict[str, str]]:
    messages = []
    for k in range(turn):
        messages += [{"role": "user", "content": prompt.turns[k]}, {"role": "assistant", "content": answers[k]}]
    return [*messages, {"role": "user", "content": prompt.turns[turn]}]
