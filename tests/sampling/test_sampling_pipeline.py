"""sample.py end to end on tiny random models: the data set, the report, one train.py step on the output, several
processes, resuming, and the drops of a reward model that cannot tell responses apart."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from sample import sample
from simpo import io
from simpo.runs.lock import RunDirInUseError
from tests.conftest import compose_train
from tests.sampling.conftest import compose_sample, pipeline_overrides, read_jsonl, save_model, tiny_llama_config
from tests.simpo.test_run_lock import hold
from train import train


@pytest.fixture(scope="module")
def finished(tmp_path_factory, policy_dir, reward_dir) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onpolicy")
    report = sample(compose_sample(out, pipeline_overrides(policy_dir, reward_dir)))
    return out, report


def rows_of(out: Path) -> dict[str, list[dict]]:
    return {split: read_jsonl(out / f"{split}.jsonl") for split in ("train_prefs", "test_prefs")}


def test_writes_ultrafeedback_splits_with_every_response_and_a_report(finished):
    out, report = finished
    splits = rows_of(out)
    assert len(splits["test_prefs"]) == 1 and len(splits["train_prefs"]) == report["binarize"]["kept"] - 1
    ids = [r["prompt_id"] for rows in splits.values() for r in rows]
    assert len(ids) == len(set(ids))
    for row in splits["train_prefs"] + splits["test_prefs"]:
        assert row["chosen"][0] == {"role": "user", "content": row["prompt"]} == row["rejected"][0]
        assert [m["role"] for m in row["chosen"]] == ["user", "assistant"] and row["messages"] == row["chosen"]
        scores, texts = row["all_rm_scores"], row["all_generated_responses"]
        assert len(scores) == len(texts) == 3
        assert row["score_chosen"] == max(scores) > row["score_rejected"] == min(scores)
        assert row["chosen"][1]["content"] == texts[scores.index(max(scores))]
        assert row["rejected"][1]["content"] == texts[scores.index(min(scores))]
    b = report["binarize"]
    assert b["prompts"] == 6 and b["kept"] + sum(b["dropped"].values()) == 6
    assert report["generate"]["responses"] == 18 and report["generate"]["tokens_per_s"] > 0
    assert report["score"]["tokens_per_s"] > 0 and report["score"]["truncated"] == 0
    saved = json.loads((out / "report.json").read_text())
    assert saved["scores"]["chosen"]["count"] == b["kept"]
    assert set(saved["lengths"]) >= {"chosen_tokens", "rejected_tokens", "chosen_longer_fraction"}
    assert (out / "report.png").stat().st_size > 1000


def test_train_py_trains_one_step_on_the_output_with_no_other_setting(finished, tmp_path):
    out, _ = finished
    # data.dataset is the only data setting; one step with no warmup (a 10% warmup of one step trains nothing)
    overrides = [f"data.dataset={out}", "trainer.max_steps=1", "optimizer.warmup_ratio=0",
                 "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]  # fmt: skip
    metrics = train(compose_train(tmp_path / "run", overrides))
    assert metrics["train/skipped_steps"] == 0 and math.isfinite(metrics["val/loss"])
    with (tmp_path / "run" / "metrics.csv").open(newline="") as handle:
        trained = [row for row in csv.DictReader(handle) if row.get("train/loss")]
    assert [int(row["step"]) for row in trained] == [0] and math.isfinite(float(trained[0]["train/loss"]))


@pytest.mark.slow
def test_two_processes_split_the_shards_and_give_the_same_rows(finished, policy_dir, reward_dir, tmp_path,
                                                                monkeypatch):  # fmt: skip
    out, _ = finished
    overrides = pipeline_overrides(policy_dir, reward_dir)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert sample(compose_sample(tmp_path, overrides)) is None  # rank 0's shards are missing: it does not binarize
    assert sorted(p.name for p in (tmp_path / "generate").iterdir()) == ["shard-00001.json"]
    monkeypatch.setenv("RANK", "0")
    assert sample(compose_sample(tmp_path, overrides)) is not None  # the last rank to finish binarizes
    assert rows_of(tmp_path) == rows_of(out)


def copy_stages(source: Path, target: Path, stages: tuple[str, ...]) -> None:
    """Copy the shards of ``stages`` and the manifest's sections of them (and of the prompts)."""
    for stage in stages:
        (target / stage).mkdir(parents=True)
        for shard in (source / stage).iterdir():
            (target / stage / shard.name).write_bytes(shard.read_bytes())
    manifest = json.loads((source / "manifest.json").read_text())
    kept = {key: value for key, value in manifest.items() if key in ("prompts", *stages)}
    (target / "manifest.json").write_text(json.dumps(kept))


def test_a_rerun_redoes_only_missing_shards_and_gives_the_same_rows(finished, policy_dir, reward_dir, tmp_path):
    out, _ = finished
    copy_stages(out, tmp_path, ("generate", "score"))
    for stage in ("generate", "score"):  # a crash while shard 1 was generated: no files of it, a stale temporary
        (tmp_path / stage / "shard-00001.json").unlink()
    (tmp_path / "generate" / f".shard-00001.json.tmp-{io._host()}-999999999-00ab").write_text('{"rows": [')
    sample(compose_sample(tmp_path, pipeline_overrides(policy_dir, reward_dir)))
    assert rows_of(tmp_path) == rows_of(out)
    assert not list((tmp_path / "generate").glob(".*tmp*"))


def test_a_rerun_with_other_settings_is_refused(finished, policy_dir, reward_dir):
    out, _ = finished
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"holds generate shards made with other settings \(temperature: 0\.8 -> 0\.5"):
        sample(compose_sample(out, pipeline_overrides(policy_dir, reward_dir, ["generate.temperature=0.5"])))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_ties_of_a_zeroed_score_head_are_dropped_and_counted(finished, policy_dir, flat_reward_dir, tmp_path):
    out, _ = finished
    copy_stages(out, tmp_path, ("generate",))
    flat = compose_sample(tmp_path, [*pipeline_overrides(policy_dir, flat_reward_dir), "stages=[score,binarize]"])
    with pytest.raises(ValueError, match=r"no prompt kept a pair \(dropped: .*'tie': 6"):
        sample(flat)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["binarize"]["dropped"]["tie"] == 6 and report["binarize"]["kept"] == 0
    assert not (tmp_path / "train_prefs.jsonl").exists()


@pytest.mark.slow
def test_identical_greedy_responses_are_dropped_and_counted(policy_dir, reward_dir, tmp_path):
    greedy = compose_sample(tmp_path, pipeline_overrides(policy_dir, reward_dir, ["generate.temperature=0"]))
    with pytest.raises(ValueError, match=r"no prompt kept a pair"):
        sample(greedy)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["binarize"]["dropped"]["identical_responses"] == 6


def test_a_double_bos_prompt_is_refused_before_anything_is_written(policy_dir, reward_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hi"}) + "\n" + json.dumps({"prompt": "<|begin_of_text|>Hello"}) + "\n")
    cfg = compose_sample(tmp_path / "out", pipeline_overrides(policy_dir, reward_dir, [f"prompts.dataset={prompts}"]))
    with pytest.raises(ValueError, match=r"single BOS: 1 of 2 prompts .* hold more than one BOS '<\|begin_of_text\|>'"):
        sample(cfg)
    assert not (tmp_path / "out").exists()


def test_an_output_directory_in_use_by_another_sample_command_is_refused(policy_dir, reward_dir, tmp_path):
    holder = hold(tmp_path / "out")
    try:
        with pytest.raises(RunDirInUseError, match=rf"output_dir=.*out is in use by process {holder.pid} "):
            sample(compose_sample(tmp_path / "out", pipeline_overrides(policy_dir, reward_dir)))
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".simpo.lock"]  # nothing of the refused command


def test_ties_made_by_the_reward_models_truncation_are_refused_naming_its_max_length(
    finished, policy_dir, reward_dir, tmp_path
):
    """reward_model.max_length shorter than the prompts cuts every conversation to its prompt: all ties, which the
    advice used to blame on the sampling temperature."""
    out, _ = finished
    copy_stages(out, tmp_path, ("generate",))
    short = compose_sample(tmp_path, [*pipeline_overrides(policy_dir, reward_dir), "stages=[score,binarize]",
                                      "reward_model.max_length=8"])  # fmt: skip
    with pytest.raises(ValueError, match=r"no prompt kept a pair: 6 of 6 prompts tied because the reward model saw "
                                         r"18 conversations cut at reward_model.max_length=8 tokens \(18 of them with "
                                         r"none of the response left\).*Raise reward_model.max_length"):  # fmt: skip
        sample(short)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["score"]["truncated"] == 18 and report["score"]["response_lost"] == 18
    assert report["binarize"]["dropped"]["truncated_tie"] == 6 and report["binarize"]["dropped"]["tie"] == 0


@pytest.fixture(scope="module")
def short_context_policy(tmp_path_factory) -> Path:
    """The tiny policy with 8 positions: every chat-templated prompt (headers alone take 10) is longer."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(max_position_embeddings=8))
    return save_model(tmp_path_factory.mktemp("short_context"), model)


def test_prompts_longer_than_the_policys_context_are_warned_and_counted(
    short_context_policy, reward_dir, tmp_path, caplog
):
    cfg = compose_sample(tmp_path, pipeline_overrides(short_context_policy, reward_dir))
    with caplog.at_level(logging.WARNING, logger="sample"):
        sample(cfg)
    assert "6 of the 6 prompts to generate are 8 tokens or longer, the policy's context" in caplog.text
    generate = json.loads((tmp_path / "report.json").read_text())["generate"]
    assert generate["prompts_over_context"] == 6 and generate["responses_past_context"] == 18
