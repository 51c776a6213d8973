"""evaluate.py on the tiny bundled policy and data, offline: every task end to end, the files the benchmark
tools read, the trainer's validation metrics reproduced, a double-BOS prompt set caught; and every bad input
(settings, prompt rows, reward model, NaN/Inf weights, missing or truncated sources) refused with an error that
names its key before anything is written."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, PreTrainedModel

from data.tokenizers import load_tokenizer
from evaluate import evaluate
from simpo.errors import UserError
from simpo.evaluation import plots
from simpo.evaluation.judge import win_rate
from simpo.evaluation.prompt_sets import detect_format
from simpo.loading.reward import RewardModel
from simpo.models.decoding import decoding_for
from simpo.runs.lock import RunDirInUseError
from tests.conftest import ROOT, TINY_OVERRIDES, compose_train
from tests.simpo.test_run_lock import hold
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


def save_tiny_llama(path: Path, model_class: type = AutoModelForCausalLM, nan_in: str | None = None) -> Path:
    """A random 1-layer Llama (causal LM or ``num_labels=1`` sequence classifier) with the bundled Llama 3
    tokenizer, saved with ``save_pretrained``; ``nan_in`` names a parameter whose first entry becomes NaN."""
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=1, vocab_size=128256, num_labels=1,
                                  bos_token_id=128000, eos_token_id=128009, pad_token_id=128009)  # fmt: skip
    model: PreTrainedModel = model_class.from_config(config)
    if nan_in is not None:
        with torch.no_grad():
            model.get_parameter(nan_in).view(-1)[0] = float("nan")
    model.save_pretrained(path)
    load_tokenizer("llama3").save_pretrained(path)
    return path


def refused(run_dir: Path, overrides: list[str], error: type[Exception], match: str) -> None:
    """``evaluate`` with ``overrides`` raises ``error`` matching ``match``, and writes nothing (no run dir)."""
    cfg = compose_eval(run_dir, overrides)
    with pytest.raises(error, match=match):
        evaluate(cfg)
    assert not run_dir.exists(), sorted(p.name for p in run_dir.iterdir())


def alpaca_answers(path: Path, instructions: list[str], outputs: list[str], generator: str) -> Path:
    rows = [{"instruction": q, "output": a, "generator": generator} for q, a in zip(instructions, outputs, strict=True)]
    path.write_text(json.dumps(rows))
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


def test_an_earlier_evaluation_is_kept_unless_told_to_replace_it(trained, tmp_path):
    policy = [f"model.name_or_path={trained / 'hf'}", "data.batch_size=4", "preference.max_pairs=4"]
    evaluate(compose_eval(tmp_path, policy))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(UserError, match=r"holds an earlier evaluation \(metrics\.json\).*overwrite=true"):
        evaluate(compose_eval(tmp_path, [*policy, "preference.max_pairs=8"]))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert evaluate(compose_eval(tmp_path, [*policy, "preference.max_pairs=8", "overwrite=true"]))["pairs"] == 8
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["pairs"] == 8


def test_an_evaluation_directory_in_use_is_refused_naming_the_holder(trained, tmp_path):
    holder = hold(tmp_path / "eval")
    try:
        with pytest.raises(RunDirInUseError, match=rf"is in use by process {holder.pid} "):
            evaluate(compose_eval(tmp_path / "eval", [f"model.name_or_path={trained / 'hf'}"]))
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [".simpo.lock"]  # the dead holder's file only


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
    reward_dir = save_tiny_llama(tmp_path / "rm", AutoModelForSequenceClassification)
    instructions = [f"Tell me about animal number {i}." for i in range(6)]
    long_answers = ["A long and helpful answer " * (i + 1) for i in range(6)]
    ours = alpaca_answers(tmp_path / "ours.json", instructions, long_answers, "ours")
    base = alpaca_answers(tmp_path / "base.json", instructions, ["No."] * 6, "base")
    cfg = compose_eval(tmp_path / "j", [f"model.name_or_path={trained / 'hf'}", "tasks=[judge]",
                                        f"judge.reward_model={reward_dir}", f"judge.outputs={ours}",
                                        f"judge.baseline={base}"])  # fmt: skip
    metrics = evaluate(cfg)
    rm = RewardModel(str(reward_dir))
    outcomes = [float(rm.score(q, a) > rm.score(q, "No.")) for q, a in zip(instructions, long_answers, strict=True)]
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
    from simpo.objectives import SimPO

    pairs = {
        "logps_chosen": torch.tensor([-1.0, -2.0], dtype=torch.float64),
        "logps_rejected": torch.tensor([-2.0, -1.0], dtype=torch.float64),
        "length_chosen": torch.tensor([2.0, 4.0], dtype=torch.float64),
        "length_rejected": torch.tensor([3.0, 3.0], dtype=torch.float64),
        "logp_sum_chosen": torch.tensor([-2.0, -8.0], dtype=torch.float64),
        "logp_sum_rejected": torch.tensor([-6.0, -3.0], dtype=torch.float64),
    }
    pairs["rewards_chosen"], pairs["rewards_rejected"] = 2 * pairs["logps_chosen"], 2 * pairs["logps_rejected"]
    pure = preference_metrics(pairs, SimPO(), [64])["loss"]
    cpo = preference_metrics(pairs, SimPO(sft_weight=1.0), [64])["loss"]
    assert cpo - pure == pytest.approx(10.0 / 6.0)  # token-mean NLL of the chosen responses: (2 + 8) / (2 + 4)


# --- bad inputs: each refused with an error naming its key, before any output is written ---------------------

MISSING = "./does/not/exist"


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ("tasks=[]", ValueError, r"tasks must be a non-empty list of \['preference', 'generate', 'judge'\]"),
        ("tasks=preference", ValueError, r"tasks must be a non-empty list"),
        ("tasks=[preference,bleu]", ValueError, r"tasks: unknown tasks \['bleu'\]"),
        ("device=tpu", ValueError, r"device must be one of \['auto', 'cpu', 'cuda'\], not 'tpu'"),
        ("model.dtype=fp8", ValueError, r"model\.dtype must be one of"),
        ("model.chunk_size=0", ValueError, r"model\.chunk_size must be null or a positive integer, not 0"),
        ("preference.max_pairs=1.5", ValueError, r"preference\.max_pairs must be a positive integer or null"),
        ("preference.length_buckets=[128,64]", ValueError, r"preference\.length_buckets must be a list of increasing"),
        ("preference.length_buckets=[0,64]", ValueError, r"preference\.length_buckets .* got \[0, 64\]"),
        ("preference.length_buckets=64", ValueError, r"preference\.length_buckets must be a list"),
        ("generate.format=alpacaeval", ValueError, r"generate\.format must be one of \['auto', 'alpaca_eval'"),
        ("generate.backend=tgi", ValueError, r"generate\.backend must be one of \['hf', 'vllm'\]"),
        ("generate.batch_size=0", ValueError, r"generate\.batch_size must be a positive integer, not 0"),
        ("generate.batch_size=null", ValueError, r"generate\.batch_size must be a positive integer, not None"),
        ("generate.limit=-1", ValueError, r"generate\.limit must be a positive integer or null, not -1"),
        ("generate.max_new_tokens=0", ValueError, r"generate\.max_new_tokens must be a positive integer or null"),
        ("generate.temperature=-0.1", ValueError, r"generate\.temperature must be a number >= 0"),
        ("generate.top_p=0", ValueError, r"generate\.top_p must be a number in \(0, 1\] or null, not 0"),
        ("generate.top_p=1.5", ValueError, r"generate\.top_p must be a number in \(0, 1\]"),
        ("judge.length_tolerance=2", ValueError, r"judge\.length_tolerance must be a number in \[0, 1\], not 2"),
        ("ckpt_path=1", ValueError, r"ckpt_path must be the path of a train\.py checkpoint \(\.ckpt\) or null, not 1"),
        ("tasks=[generate]", ValueError, r"the generate task needs generate\.prompts"),
        ("tasks=[judge]", ValueError, r"the judge task needs judge\.reward_model"),
        (f"training_logs={MISSING}.csv", FileNotFoundError, r"training_logs=\./does/not/exist\.csv: no such file"),
    ],
)
def test_settings_are_checked_first(tmp_path, override, error, match):
    # the policy does not exist either: a check that came too late would fail on it instead
    refused(tmp_path / "run", [f"model.name_or_path={MISSING}", override], error, match)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_device_cuda_without_a_gpu(tmp_path):
    refused(tmp_path / "run", [f"model.name_or_path={MISSING}", "device=cuda"], ValueError,
            r"device=cuda but no CUDA GPU is visible here: use device=auto or device=cpu")  # fmt: skip


@pytest.mark.parametrize(
    ("fmt", "rows", "match"),
    [
        ("alpaca_eval", [{"instruction": "Hi"}, {"question": "Hi"}],
         r"generate\.prompts=.*prompts\.jsonl: row 2 \(counting from 1\) has no field 'instruction', which "
         r"generate\.format=alpaca_eval needs"),
        ("auto", [{"instruction": "Hi"}, {"instruction": 3}],
         r"row 2 .* 'instruction' that is not a string, which generate\.format=auto \(detected alpaca_eval"),
        ("arena_hard", [{"question_id": 1, "turns": ["Hi"]}],
         r"row 1 \(counting from 1\) has a turn that is not \{'content': string\}, which generate\.format=arena_hard"),
        ("mt_bench", [{"question_id": 1, "turns": ["a", "b"]}, {"turns": ["a"]}],
         r"row 2 \(counting from 1\) has no field 'question_id', which generate\.format=mt_bench needs"),
        ("auto", [{"question": "Hi"}],
         r"generate\.format=auto cannot tell the format of generate\.prompts=.* from its row 1 \(fields "
         r"\['question'\]\): alpaca_eval needs 'instruction' \(a string\); arena_hard needs 'question_id' and "
         r"'turns' .*; mt_bench needs 'question_id' and 'turns'"),
        ("auto", [], r"generate\.prompts=.*: the prompt set has no rows"),
    ],
)  # fmt: skip
def test_prompt_rows_are_checked_before_any_task(trained, tmp_path, fmt, rows, match):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", rows)
    refused(tmp_path / "run", [f"model.name_or_path={trained / 'hf'}", "tasks=[preference,generate]",
                               f"generate.prompts={prompts}", f"generate.format={fmt}"], ValueError, match)  # fmt: skip


def test_a_double_bos_prompt_is_caught_before_the_preference_task(trained, tmp_path):
    prompts = tmp_path / "bad.json"
    prompts.write_text(json.dumps([{"instruction": "Hi"}, {"instruction": "<|begin_of_text|>Hi"}]))
    overrides = [f"model.name_or_path={trained / 'hf'}", "tasks=[preference,generate]", f"generate.prompts={prompts}"]
    refused(tmp_path / "run", overrides, ValueError, r"prompt 1: the prompt holds 2 BOS")


def judge_overrides(trained: Path, tmp_path: Path, reward_model: Path | str) -> list[str]:
    """generate then judge: a reward model refused too late would leave the answers written."""
    questions = ["Name a colour."]
    prompts = tmp_path / "alpaca.json"
    prompts.write_text(json.dumps([{"instruction": q} for q in questions]))
    base = alpaca_answers(tmp_path / "base.json", questions, ["Red."], "base")
    return [f"model.name_or_path={trained / 'hf'}", "tasks=[generate,judge]", f"generate.prompts={prompts}",
            "generate.max_new_tokens=2", f"judge.reward_model={reward_model}", f"judge.baseline={base}"]  # fmt: skip


def test_a_causal_lm_is_refused_as_reward_model(trained, tmp_path):
    causal = save_tiny_llama(tmp_path / "causal")
    refused(tmp_path / "run", judge_overrides(trained, tmp_path, causal), ValueError,
            r"judge\.reward_model=.*causal is not a reward model: its config\.json names architectures "
            r"\['LlamaForCausalLM'\], none of them \*ForSequenceClassification")  # fmt: skip
    # a config that claims a sequence classifier over causal-LM weights: the score head would be fresh
    config = json.loads((causal / "config.json").read_text())
    (causal / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForSequenceClassification"]}))
    refused(tmp_path / "run", judge_overrides(trained, tmp_path, causal), ValueError,
            r"judge\.reward_model=.*causal: the checkpoint lacks weights of the LlamaForSequenceClassification "
            r"it loads as \(score\.weight\), so they would be freshly initialised")  # fmt: skip


def test_a_reward_model_with_nan_weights_is_refused(trained, tmp_path):
    reward_dir = save_tiny_llama(tmp_path / "rm", AutoModelForSequenceClassification, nan_in="score.weight")
    refused(tmp_path / "run", judge_overrides(trained, tmp_path, reward_dir), ValueError,
            r"judge\.reward_model=.*rm: the weights hold NaN or Inf in 1 tensor \(score\.weight\)")  # fmt: skip


def test_a_policy_with_nan_weights_is_refused(tmp_path):
    policy = save_tiny_llama(tmp_path / "nan_policy", nan_in="model.layers.0.mlp.up_proj.weight")
    refused(tmp_path / "run", [f"model.name_or_path={policy}", "preference.max_pairs=4"], ValueError,
            r"model\.name_or_path=.*nan_policy: the weights hold NaN or Inf in 1 tensor "
            r"\(model\.layers\.0\.mlp\.up_proj\.weight\)")  # fmt: skip


def test_a_checkpoint_with_inf_weights_is_refused(trained, tmp_path):
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    checkpoint["state_dict"]["policy.model.norm.weight"][0] = float("inf")
    bad = tmp_path / "inf.ckpt"
    torch.save(checkpoint, bad)
    refused(tmp_path / "run", [f"ckpt_path={bad}", "preference.max_pairs=4"], ValueError,
            r"ckpt_path=.*inf\.ckpt: the weights hold NaN or Inf in 1 tensor \(model\.norm\.weight\)")  # fmt: skip


def test_a_stored_loss_chunk_size_is_ignored(trained, tmp_path):
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["config"]["loss"]["chunk_size"] = 512  # written by runs before model.chunk_size
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    metrics = evaluate(compose_eval(tmp_path / "run", [f"ckpt_path={old}", "preference.max_pairs=4"]))
    assert metrics["pairs"] == 4


@pytest.mark.parametrize(
    ("key", "error", "match"),
    [
        ("model.name_or_path", FileNotFoundError, r"model\.name_or_path=\./does/not/exist: no such directory"),
        ("model.tokenizer", FileNotFoundError, r"model\.tokenizer=\./does/not/exist: no such directory"),
        ("judge.reward_model", FileNotFoundError, r"judge\.reward_model=\./does/not/exist: no such directory"),
        ("ckpt_path", FileNotFoundError, r"ckpt_path=does/not/exist: no such checkpoint file"),
    ],
)
def test_a_missing_source_names_its_key(trained, tmp_path, key, error, match):
    answers = alpaca_answers(tmp_path / "a.json", ["Hi"], ["Hello."], "x")
    reward_dir = save_tiny_llama(tmp_path / "rm", AutoModelForSequenceClassification)
    overrides = {"model.name_or_path": trained / "hf", "tasks": "[judge]", "judge.reward_model": reward_dir,
                 "judge.outputs": answers, "judge.baseline": answers}  # fmt: skip
    if key == "ckpt_path":
        del overrides["model.name_or_path"]
    overrides[key] = MISSING
    refused(tmp_path / "run", [f"{k}={v}" for k, v in overrides.items()], error, match)


def test_a_truncated_checkpoint_is_named(trained, tmp_path):
    data = (trained / "checkpoints" / "last.ckpt").read_bytes()
    for cut in (0, 100, len(data) // 2, len(data) - 100):
        bad = tmp_path / f"cut{cut}.ckpt"
        bad.write_bytes(data[:cut])
        refused(tmp_path / "run", [f"ckpt_path={bad}"], ValueError,
                rf"ckpt_path=.*cut{cut}\.ckpt: cut{cut}\.ckpt is not a complete checkpoint \(")  # fmt: skip


@pytest.mark.parametrize(
    ("key", "content", "match"),
    [
        ("judge.baseline", "[{\"instruction\": \"Hi\"}]", r"judge\.baseline=.*: row 1 \(counting from 1\) is not an "
                                                          r"answer of the form \{instruction, output\}"),
        ("judge.outputs", "[{\"instruction\": \"Hi\",", r"judge\.outputs=.*: not valid json"),
    ],
)  # fmt: skip
def test_a_malformed_answer_file_names_its_key(trained, tmp_path, key, content, match):
    good = alpaca_answers(tmp_path / "good.json", ["Hi"], ["Hello."], "x")
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    reward_dir = save_tiny_llama(tmp_path / "rm", AutoModelForSequenceClassification)
    files = {"judge.outputs": good, "judge.baseline": good, key: bad}
    refused(tmp_path / "run", [f"model.name_or_path={trained / 'hf'}", "tasks=[judge]",
                               f"judge.reward_model={reward_dir}", *[f"{k}={v}" for k, v in files.items()]],
            ValueError, match)  # fmt: skip


# --- plots never crash on NaN/Inf: they show the finite values and count what they left out ------------------


@pytest.fixture
def figures(monkeypatch) -> list:
    """The figures the plots would have closed, to read their titles."""
    kept: list = []
    monkeypatch.setattr(plots.plt, "close", kept.append)
    return kept


def test_reward_histogram_leaves_out_non_finite_rewards(tmp_path, figures):
    chosen = torch.tensor([-1.0, float("nan"), -0.5, float("inf"), -0.2], dtype=torch.float64)
    rejected = torch.tensor([-2.0, -1.0, float("-inf"), float("inf"), -0.1], dtype=torch.float64)
    path = plots.reward_histogram({"rewards_chosen": chosen, "rewards_rejected": rejected}, tmp_path / "h.png")
    assert path.stat().st_size > 1000
    left, right = (axis.get_title() for axis in figures[0].axes)
    assert left.endswith("(4 non-finite values left out)")  # 2 chosen + 2 rejected
    assert "50.0% > 0" in right and right.endswith("(3 non-finite values left out)")  # margins [1, nan, inf, nan, -.1]
    everything_bad = torch.full((3,), float("nan"), dtype=torch.float64)
    plots.reward_histogram({"rewards_chosen": everything_bad, "rewards_rejected": everything_bad}, tmp_path / "n.png")
    assert "no finite margin" in figures[1].axes[1].get_title()


def test_training_curves_leave_out_non_finite_values(tmp_path, figures):
    csv_path = tmp_path / "metrics.csv"
    rows = ["step,train/loss,val/loss,train/rewards/margins", "0,0.69,,0.1", "1,nan,,inf", "2,0.5,0.6,",
            "3,inf,nan,oops", ",0.4,,"]  # fmt: skip
    csv_path.write_text("\n".join(rows) + "\n")
    path = plots.training_curves(csv_path, tmp_path / "curves.png")
    assert path.stat().st_size > 1000
    loss, margins, accuracies = (axis.get_title() for axis in figures[0].axes)
    assert loss == "loss\n(4 non-finite values left out)"  # train nan, inf, a row without step; val nan
    assert margins == "rewards/margins\n(2 non-finite values left out)"
    assert accuracies == "rewards/accuracies"  # no such column: an empty panel, no legend, no crash
