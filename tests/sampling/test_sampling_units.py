"""The sampling pieces against hand values and independent computations: pair picking and its drops, shard
assignment, batched scoring against float64 one-at-a-time, left-padded greedy generation against one prompt alone."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from simpo.loading.reward import RewardModel
from simpo.models.decoding import Decoding
from simpo.sampling.binarize import binarize, pick_pair, split_pairs
from simpo.sampling.engines import HFEngine
from simpo.sampling.prompts import Prompt, load_prompts, prompt_token_ids
from simpo.sampling.score import Scorer
from simpo.sampling.shards import ShardPlan


def responses(*pairs):
    return [{"text": text, "score": score, "tokens": len(text)} for text, score in pairs]


def test_pick_pair_by_hand():
    assert pick_pair(responses(("a", 1.0), ("b", 3.0), ("c", -2.0)), 0.0) == (1, 2)
    assert pick_pair(responses(("a", 3.0), ("b", 3.0), ("c", 1.0), ("d", 1.0)), 0.0) == (0, 2)  # lowest index wins
    assert pick_pair(responses(("a", 1.0), ("b", 1.0)), 0.0) == "tie"
    cut = [{**r, "truncated": True} for r in responses(("a", 1.0), ("b", 1.0))]
    assert pick_pair(cut, 0.0) == "truncated_tie" and pick_pair([cut[0], responses(("b", 1.0))[0]], 0.0) == "tie"
    assert pick_pair(responses(("a", 1.0), ("b", 1.4)), 0.5) == "below_min_margin"
    assert pick_pair(responses(("a", 1.0), ("b", 1.5)), 0.5) == (1, 0)
    assert pick_pair(responses(("same", 1.0), (" same ", 2.0)), 0.0) == "identical_responses"
    assert pick_pair(responses(("a", 1.0), ("  ", 9.0), ("", 0.0)), 0.0) == "blank_responses"
    assert pick_pair(responses(("a", 1.0), ("  ", 9.0), ("b", 0.0)), 0.0) == (0, 2)  # blank is no candidate
    assert pick_pair(responses(("a", math.nan), ("b", 0.0)), 0.0) == "nonfinite_score"


def test_binarize_counts_every_prompt_once():
    turns = [{"role": "user", "content": "q"}]
    kinds = [responses(("a", 1.0), ("b", 2.0)), responses(("a", 1.0), ("a", 1.0)), responses(("a", 0.0), ("b", 0.0))]
    rows = [{"prompt_id": str(i), "turns": turns, "responses": r} for i, r in enumerate(kinds)]
    result = binarize(rows, 0.0)
    assert [p["prompt_id"] for p in result.pairs] == ["0"]
    assert result.dropped["identical_responses"] == 1 and result.dropped["tie"] == 1
    pair = result.pairs[0]
    assert pair["chosen"] == [*turns, {"role": "assistant", "content": "b"}] and pair["score_rejected"] == 1.0
    splits = split_pairs([{"i": i} for i in range(10)], 3, seed=7)
    assert len(splits["test_prefs"]) == 3 and sorted(r["i"] for v in splits.values() for r in v) == list(range(10))
    assert splits == split_pairs([{"i": i} for i in range(10)], 3, seed=7)
    with pytest.raises(ValueError, match=r"binarize\.test_size=1 leaves no test pair or no training pair"):
        split_pairs([{"i": 0}], 1, seed=7)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_ranks_split_the_shards_without_overlap_or_gap(world):
    plans = [ShardPlan(23, 4, rank, world) for rank in range(world)]
    shards = sorted(s for plan in plans for s in plan.mine())
    assert shards == list(range(6))
    covered = sorted(i for plan in plans for s in plan.mine() for i in range(*plan.bounds(s)))
    assert covered == list(range(23))


def test_prompts_deduplicated_with_sha256_ids(tmp_path, llama3_tokenizer):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "b"}\n{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": " "}\n')
    found = load_prompts(str(path), "train", "prompt")
    assert (found.rows_read, found.duplicates, found.unusable) == (4, 1, 1)
    a_id = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"  # sha256(b"a")
    b_id = "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"  # sha256(b"b")
    assert [(p.prompt_id, p.text) for p in found.prompts] == [(b_id, "b"), (a_id, "a")]  # sorted by id
    ids = prompt_token_ids(llama3_tokenizer, [Prompt("x", [{"role": "user", "content": "Hello"}])])[0]
    assert ids[0] == llama3_tokenizer.bos_token_id and ids.count(llama3_tokenizer.bos_token_id) == 1


def test_batched_scores_equal_float64_scores_one_at_a_time(reward_dir):
    reward = RewardModel(str(reward_dir))
    scorer = Scorer(reward, batch_size=3, max_length=4096)
    turns = [{"role": "user", "content": "Name a colour."}]
    conversations = [scorer.conversation(turns, text).ids for text in ("Red.", "It is blue, I think.", "Green", "x")]
    batched = scorer.scores(conversations)
    model = reward.model.double()
    with torch.no_grad():
        alone = [float(model(input_ids=torch.tensor([ids])).logits[0, 0]) for ids in conversations]
    reward.model.float()
    assert batched == pytest.approx(alone, abs=1e-4)
    assert len(set(batched)) == 4
    cut = Scorer(reward, batch_size=2, max_length=5).conversation(turns, "Red.")
    assert cut.truncated and len(cut.ids) == 5


def test_left_padded_greedy_batches_equal_one_prompt_at_a_time(policy_dir, llama3_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float64).eval()
    texts = ["Hi", "Tell me a long story about a dragon and a knight.", "Why?"]
    ids = prompt_token_ids(llama3_tokenizer, [Prompt(t, [{"role": "user", "content": t}]) for t in texts])
    greedy = Decoding(temperature=0.0, top_p=1.0, max_new_tokens=5, stop_token_ids=(128009,))
    batched = HFEngine(model, 128009, batch_size=3).generate(ids, greedy, seed=0)
    alone = HFEngine(model, 128009, batch_size=1).generate(ids, greedy, seed=0)
    assert batched == alone and all(len(s.ids) + s.finished >= 1 for s in batched)


def test_sample_refuses_an_output_dir_holding_someone_elses_data(tmp_path):
    """A directory with a ``train_prefs.jsonl`` that no sample.py run wrote (no manifest) is refused by name before
    anything is read or written; with an earlier run's manifest it is sample.py's own, to resume."""
    from sample import prepare
    from simpo.errors import UserError
    from simpo.sampling.shards import MANIFEST
    from tests.sampling.conftest import compose_sample

    (tmp_path / "train_prefs.jsonl").write_text('{"someone": "else"}\n')
    (tmp_path / "notes.md").write_text("kept")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(UserError, match=rf"output_dir={tmp_path} holds train_prefs.jsonl, which sample.py did not "
                                        rf"write \(there is no {MANIFEST} of an earlier sample.py run\).*another "
                                        "output_dir, or move them away"):  # fmt: skip
        prepare(compose_sample(tmp_path, ["stages=[generate]"]))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_an_unknown_chat_template_is_named_by_the_sampling_key():
    from omegaconf import OmegaConf

    from simpo.errors import UserError
    from simpo.sampling.policy import sampling_policy

    model = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "model" / "tiny_llama.yaml")
    with pytest.raises(UserError, match=r"^generate\.chat_template='nope': unknown bundled chat template 'nope'"):
        sampling_policy(model, seed=0, chat_template="nope")
