"""The score stage: every (prompt, response) conversation rated by a reward model, shard by shard.

Any ``AutoModelForSequenceClassification`` (``simpo.loading.reward.RewardModel`` loads and checks it; custom
code such as ArmoRM's only with ``reward_model.trust_remote_code=true``). Each conversation is rendered in the
reward model's own chat template and tokenised without extra special tokens; conversations longer than
``reward_model.max_length`` tokens keep their first tokens and are counted as truncated (and as ``response_lost`` when
the prompt alone fills ``max_length``, so the reward model saw none of the response). Conversations are scored in
right-padded batches sorted by length (padded with the model's ``pad_token_id``, which its head uses to find each
row's last token; a model without one is scored one conversation at a time). Identical responses to one prompt are
scored once, so they always get the same score.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from simpo.errors import UserError
from simpo.loading.reward import RewardModel
from simpo.sampling.generate import Throughput
from simpo.sampling.shards import ShardPlan, ShardStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Conversation:
    """Token ids of one conversation in the reward model's template, whether they were cut to fit, and whether the
    cut left none of the response."""

    ids: list[int]
    truncated: bool
    response_lost: bool = False


class Scorer:
    """Batched reward scores.

    Args:
        reward: the loaded reward model (its tokenizer needs a chat template).
        batch_size: conversations per forward pass.
        max_length: longest conversation, in the reward model's tokens.
    """

    def __init__(self, reward: RewardModel, batch_size: int, max_length: int) -> None:
        self.reward, self.max_length = reward, max_length
        self.pad_id = reward.model.config.pad_token_id
        self.batch_size = batch_size if self.pad_id is not None else 1
        if self.pad_id is None and batch_size > 1:
            log.warning("the reward model's config has no pad_token_id: conversations are scored one at a time")

    def conversation(self, turns: list[dict[str, str]], response: str) -> Conversation:
        """The ids of ``turns`` + the assistant's ``response`` in the reward model's chat template."""
        tokenizer = self.reward.tokenizer
        text = tokenizer.apply_chat_template([*turns, {"role": "assistant", "content": response}], tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_length:
            return Conversation(ids, False)
        prompt = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        prompt_length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return Conversation(ids[: self.max_length], True, prompt_length >= self.max_length)

    @torch.no_grad()
    def scores(self, conversations: list[list[int]], on_batch=None) -> list[float]:
        """One reward per conversation (token ids), computed in right-padded batches of similar lengths."""
        order = sorted(range(len(conversations)), key=lambda i: -len(conversations[i]))
        result = [0.0] * len(conversations)
        device = self.reward.device
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            width = max(len(conversations[i]) for i in chunk)
            pad = self.pad_id if self.pad_id is not None else 0
            ids = torch.tensor([conversations[i] + [pad] * (width - len(conversations[i])) for i in chunk])  # (B, T)
            mask = torch.tensor([[1] * len(conversations[i]) + [0] * (width - len(conversations[i])) for i in chunk])
            output = self.reward.model(input_ids=ids.to(device), attention_mask=mask.to(device))
            values = output.score if hasattr(output, "score") else output.logits  # (B, 1) or (B,)
            for i, value in zip(chunk, values.reshape(len(chunk), -1)[:, 0].float().tolist(), strict=True):
                result[i] = value
            if on_batch is not None:
                on_batch(len(chunk), sum(len(conversations[i]) for i in chunk))
        return result


def score_shard(scorer: Scorer, rows: list[dict], progress: Throughput | None = None) -> tuple[list[dict], dict]:
    """The generate rows with ``score``, ``truncated`` and ``response_lost`` added to each response, and the shard's
    stats (``conversations`` scored, ``truncated``, ``response_lost``, ``tokens``, ``seconds``)."""
    start = time.perf_counter()
    keys: dict[tuple[int, str], int] = {}  # (row, response text) -> conversation index
    conversations: list[Conversation] = []
    for r, row in enumerate(rows):
        for response in row["responses"]:
            if (r, response["text"]) not in keys:
                keys[(r, response["text"])] = len(conversations)
                conversations.append(scorer.conversation(row["turns"], response["text"]))
    update = progress.update if progress is not None else None
    values = scorer.scores([c.ids for c in conversations], update)
    scored = []
    for r, row in enumerate(rows):
        responses = []
        for response in row["responses"]:
            index = keys[(r, response["text"])]
            cut = conversations[index]
            responses.append({**response, "score": values[index], "truncated": cut.truncated,
                              "response_lost": cut.response_lost})  # fmt: skip
        scored.append({**row, "responses": responses})
    stats = {
        "conversations": len(conversations),
        "truncated": sum(c.truncated for c in conversations),
        "response_lost": sum(c.response_lost for c in conversations),
        "tokens": sum(len(c.ids) for c in conversations),
        "seconds": time.perf_counter() - start,
    }
    return scored, stats


def run_score(scorer: Scorer, plan: ShardPlan, generated: ShardStore, store: ShardStore, progress=None) -> int:
    """Score every shard of this rank that has no score file yet; returns the shards written.

    Raises:
        ValueError: a shard to score has no generate file (run the generate stage first; names ``stages``).
    """
    store.remove_stale_temporaries()
    todo = store.missing(plan.mine())
    absent = generated.missing(todo)
    if absent:
        raise UserError(
            f"stages: {len(absent)} shards to score have no generated responses yet (e.g. "
            f"{generated.path(absent[0])}): run the generate stage first (stages=[generate,score,binarize])"
        )
    for shard in todo:
        rows, stats = score_shard(scorer, generated.read(shard)["rows"], progress)
        store.write(shard, rows, stats)
        log.info("score: shard %d written, %.0f tok/s", shard, stats["tokens"] / max(stats["seconds"], 1e-9))
    if progress is not None:
        progress.close()
    return len(todo)
