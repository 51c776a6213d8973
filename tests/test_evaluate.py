"""evaluate.py on the tiny bundled policy and data, offline: every task end to end, the files the benchmark
tools read, the trainer's validation metrics reproduced, a double-BOS prompt set caught."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoConfig, AutoModelForSequenceClassification

from evaluate import evaluate
from simpo.evaluation.decoding import decoding_for
from simpo.evaluation.judge import win_rate
from simpo.evaluation.prompt_sets import detect_format
from tests.conftest import ROOT, TINY_OVERRIDES, compose_train
from train import train

STATS = [
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
]


def compose_eval(run_dir: Path, overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=[f"run_dir={run_dir}", *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained")
    train(compose_train(run_dir, TINY_OVERRIDES))
    return run_dir


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("source", ["ckpt", "hf"])
def test_preference_equals_the_trainers_validation(trained, tmp_path, source):
    with (trained / "metrics.csv").open(newline="") as handle:
        last_val = [r for r in csv.DictReader(handle) if r.get("val/loss")][-1]
    policy = [f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}"] if source == "ckpt" else [
        f"model.name_or_path={trained / 'hf'}"]  # fmt: skip
    # the trainer validated on limit_val_batches=4 x batch_size=4 pairs
    metrics = evaluate(compose_eval(tmp_path, [*policy, "data.batch_size=4", "preference.max_pairs=16"]))
    assert metrics["pairs"] == 16
    for stat in [*STATS, "loss"]:
        assert metrics[stat] == pytest.approx(float(last_val[f"val/{stat}"]), rel=1e-5, abs=1e-6), stat
    assert sum(v for k, v in metrics.items() if k.startswith("length/") and k.endswith("/pairs")) == 16
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics"] == pytest.approx(metrics) and {"model", "data", "settings", "versions"} <= set(saved)
    assert "| rewards/accuracies |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "reward_histogram.png").stat().st_size > 1000


def test_checkpoint_loss_settings_win(trained, tmp_path):
    cfg = compose_eval(tmp_path, [f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", "loss.beta=99",
                                  "preference.max_pairs=4", f"training_logs={trained / 'metrics.csv'}"])  # fmt: skip
    evaluate(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["loss"]["beta"] == 2.0  # the trained run's beta, not the override
    assert (tmp_path / "training_curves.png").is_file()


def test_generate_alpaca_eval(trained, tmp_path):
    prompts = [{"instruction": "What is a cat?", "dataset": "helpful_base"}, {"instruction": "Name a colour."}]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(prompts))
    overrides = [f"model.name_or_path={trained / 'hf'}", "tasks=[generate]", f"generate.prompts={path}",
                 "generate.max_new_tokens=6", "generate.name=tiny"]  # fmt: skip
    cfg = compose_eval(tmp_path, overrides)
    metrics = evaluate(cfg)
    outputs = json.loads((tmp_path / "model_outputs.json").read_text())
    assert [set(o) for o in outputs] == [{"instruction", "output", "generator", "dataset"},
                                         {"instruction", "output", "generator"}]  # fmt: skip
    assert [o["instruction"] for o in outputs] == ["What is a cat?", "Name a colour."]
    assert all(o["generator"] == "tiny" and isinstance(o["output"], str) for o in outputs)
    assert metrics["generate/prompts"] == 2 and 0 < metrics["generate/mean_new_tokens"] <= 6


def test_generate_arena_hard_and_mt_bench(trained, tmp_path):
    arena_row = {"question_id": "q1", "category": "arena-hard-v0.1", "turns": [{"content": "Explain owls."}]}
    arena = write_jsonl(tmp_path / "arena.jsonl", [arena_row])
    mt = write_jsonl(tmp_path / "mt.jsonl", [{"question_id": 81, "category": "writing",
                                              "turns": ["Write a haiku.", "Now shorter."]}])  # fmt: skip
    common = [f"model.name_or_path={trained / 'hf'}", "tasks=[generate]", "generate.max_new_tokens=5",
              "generate.name=tiny"]  # fmt: skip
    evaluate(compose_eval(tmp_path / "a", [*common, f"generate.prompts={arena}"]))
    record = json.loads((tmp_path / "a" / "model_answer" / "tiny.jsonl").read_text())
    assert set(record) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
    assert record["question_id"] == "q1" and record["model_id"] == "tiny"
    turn = record["choices"][0]["turns"][0]
    assert set(turn) == {"content", "token_len"} and 0 < turn["token_len"] <= 5

    evaluate(compose_eval(tmp_path / "m", [*common, f"generate.prompts={mt}"]))
    record = json.loads((tmp_path / "m" / "model_answer" / "tiny.jsonl").read_text())
    assert record["question_id"] == 81 and record["choices"][0]["index"] == 0
    assert len(record["choices"][0]["turns"]) == 2 and all(isinstance(t, str) for t in record["choices"][0]["turns"])


def test_a_double_bos_prompt_set_is_caught(trained, tmp_path):
    rendered = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"instruction": rendered}]))
    cfg = compose_eval(
        tmp_path, [f"model.name_or_path={trained / 'hf'}", "tasks=[generate]", f"generate.prompts={path}"]
    )
    with pytest.raises(ValueError, match=r"prompt 0: the prompt holds 2 BOS tokens"):
        evaluate(cfg)


def test_judge_win_rate(trained, tmp_path):
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=1, vocab_size=128256, num_labels=1,
                                  pad_token_id=128009)  # fmt: skip
    reward_dir = tmp_path / "rm"
    AutoModelForSequenceClassification.from_config(config).save_pretrained(reward_dir)
    from data.tokenizers import load_tokenizer

    load_tokenizer("llama3").save_pretrained(reward_dir)
    instructions = [f"Tell me about animal number {i}." for i in range(6)]
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps([{"instruction": q, "output": "A long and helpful answer " * (i + 1),
                                 "generator": "ours"} for i, q in enumerate(instructions)]))  # fmt: skip
    base = tmp_path / "base.json"
    base.write_text(json.dumps([{"instruction": q, "output": "No.", "generator": "base"} for q in instructions]))
    cfg = compose_eval(tmp_path / "j", [f"model.name_or_path={trained / 'hf'}", "tasks=[judge]",
                                        f"judge.reward_model={reward_dir}", f"judge.outputs={ours}",
                                        f"judge.baseline={base}"])  # fmt: skip
    metrics = evaluate(cfg)
    from simpo.evaluation.judge import RewardModel

    rm = RewardModel(str(reward_dir))
    outcomes = [float(rm.score(q, "A long and helpful answer " * (i + 1)) > rm.score(q, "No."))
                for i, q in enumerate(instructions)]  # fmt: skip
    assert metrics["judge/prompts"] == 6
    assert metrics["judge/win_rate"] == pytest.approx(sum(outcomes) / 6)
    assert metrics["judge/win_rate_ci_low"] <= metrics["judge/win_rate"] <= metrics["judge/win_rate_ci_high"]
    assert metrics["judge/baseline_mean_length"] == 3 and metrics["judge/mean_length"] > 26
    assert metrics["judge/similar_length_pairs"] == 0


def test_win_rate_hand_values():
    rate, low, high = win_rate([1.0, 0.0, 0.5, 1.0])
    # mean 0.625; sample variance ((.375^2)*2 + .625^2 + .125^2) / 3 = 0.2291667; half = 1.96 * sqrt(var / 4)
    assert rate == 0.625 and high == 1.0  # 0.625 + 0.469 is clipped to 1
    assert low == pytest.approx(0.625 - 1.96 * (0.2291667 / 4) ** 0.5, rel=1e-6)
    assert win_rate([1.0] * 3) == (1.0, 1.0, 1.0)


def test_decoding_follows_the_authors():
    llama = decoding_for("llama3", "alpaca_eval", None, eos_token_id=128009)
    assert (llama.temperature, llama.top_p, llama.max_new_tokens) == (0.9, 1.0, 4096)
    assert llama.stop_token_ids == (128001, 128009)
    assert decoding_for("mistral-instruct", "alpaca_eval", None, 2).temperature == 0.5
    assert decoding_for("mistral-base", "alpaca_eval", None, 2).max_new_tokens == 2048
    arena = decoding_for("llama3", "arena_hard", None, 128009)
    assert (arena.temperature, arena.max_new_tokens) == (0.0, 4096)
    assert decoding_for("llama3", "mt_bench", "math", 128009).temperature == 0.0
    assert decoding_for("llama3", "mt_bench", "writing", 128009, temperature=0.2).temperature == 0.2


def test_format_detection_and_errors(tmp_path):
    assert detect_format([{"instruction": "x"}]) == "alpaca_eval"
    assert detect_format([{"question_id": 1, "turns": [{"content": "x"}]}]) == "arena_hard"
    assert detect_format([{"question_id": 1, "turns": ["x", "y"]}]) == "mt_bench"
    with pytest.raises(ValueError, match=r"generate\.format"):
        detect_format([{"question": "x"}])
    with pytest.raises(ValueError, match="unknown tasks"):
        evaluate(compose_eval(tmp_path, ["tasks=[bleu]"]))
    with pytest.raises(ValueError, match=r"exactly one of model\.name_or_path"):
        evaluate(compose_eval(tmp_path, []))


def test_preference_loss_includes_the_sft_term_of_cpo_simpo():
    from simpo.evaluation.preference import preference_metrics
    from simpo.loss import SimPOLoss

    pairs = {
        "logps_chosen": torch.tensor([-1.0, -2.0], dtype=torch.float64),
        "logps_rejected": torch.tensor([-2.0, -1.0], dtype=torch.float64),
        "length_chosen": torch.tensor([2.0, 4.0], dtype=torch.float64),
        "length_rejected": torch.tensor([3.0, 3.0], dtype=torch.float64),
        "logp_sum_chosen": torch.tensor([-2.0, -8.0], dtype=torch.float64),
    }
    pairs["rewards_chosen"], pairs["rewards_rejected"] = 2 * pairs["logps_chosen"], 2 * pairs["logps_rejected"]
    pure = preference_metrics(pairs, SimPOLoss(), [64])["loss"]
    cpo = preference_metrics(pairs, SimPOLoss(sft_weight=1.0), [64])["loss"]
    assert cpo - pure == pytest.approx(10.0 / 6.0)  # token-mean NLL of the chosen responses: (2 + 8) / (2 + 4)
