"""train.py end to end through Hydra's compose API: metrics, checkpoints, Hugging Face export, resume."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from data.datamodule import PreferenceDataModule
from simpo.models.policy import build_policy
from tests.conftest import TINY_OVERRIDES, compose_train
from train import train

STATS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
         "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"]  # fmt: skip


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def column(rows: list[dict[str, str]], name: str) -> dict[int, float]:
    return {int(r["step"]): float(r[name]) for r in rows if r.get(name)}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    run_dir = tmp_path_factory.mktemp("run")
    metrics = train(compose_train(run_dir, TINY_OVERRIDES))
    return run_dir, metrics


def test_logs_every_metric_under_its_exact_name(finished_run):
    run_dir, metrics = finished_run
    rows = read_metrics(run_dir)
    for stat in STATS:
        assert sorted(column(rows, f"train/{stat}")) == [0, 1, 2, 3, 4, 5], stat
        # validation: before training (step 0), then after steps 3 and 6 (logged at steps 2 and 5)
        assert sorted(column(rows, f"val/{stat}")) == [0, 2, 5], stat
    assert "train/sft_loss" not in rows[0]  # pure SimPO by default
    lr = column(rows, "train/lr")
    assert lr[0] == 0.0 and max(lr.values()) == pytest.approx(1e-3) and lr[5] < lr[1]  # warmup, then cosine
    assert all(v > 0 for v in column(rows, "train/grad_norm").values())
    for stat in STATS:
        assert metrics[f"val/{stat}"] == pytest.approx(column(rows, f"val/{stat}")[5])
    margins, chosen, rejected = (column(rows, f"train/rewards/{k}") for k in ("margins", "chosen", "rejected"))
    assert margins[3] == pytest.approx(chosen[3] - rejected[3], abs=1e-5)


def test_step0_validation_equals_an_independent_float64_computation(finished_run):
    """The logged val/* at step 0 equal a from-scratch float64 computation on the same random policy."""
    run_dir, _ = finished_run
    cfg = compose_train(run_dir, TINY_OVERRIDES)
    logged = {stat: column(read_metrics(run_dir), f"val/{stat}")[0] for stat in STATS}

    L.seed_everything(cfg.seed)  # train.py seeds, then builds the random policy
    from data.tokenizers import load_tokenizer

    tokenizer = load_tokenizer("llama3")
    policy = build_policy(tokenizer, architecture=dict(cfg.model.architecture)).double().eval()
    data = PreferenceDataModule(tokenizer, cfg.data.dataset, batch_size=4, max_length=cfg.data.max_length,
                                max_prompt_length=cfg.data.max_prompt_length)  # fmt: skip
    data.setup()
    beta, ratio = cfg.loss.beta, cfg.loss.gamma_beta_ratio
    avgs, logit_means = [], []
    with torch.no_grad():
        for pair in list(data.splits["val"])[:16]:  # limit_val_batches=4 x batch_size=4
            row_avgs = []
            for side in ("chosen", "rejected"):
                ids = torch.tensor([pair[f"{side}_input_ids"]])
                labels = pair[f"{side}_labels"]
                logits = policy(input_ids=ids).logits[0].double()  # (T, V)
                logp = F.log_softmax(logits, -1)
                positions = [t for t in range(len(labels) - 1) if labels[t + 1] != -100]
                row_avgs.append(sum(logp[t, labels[t + 1]].item() for t in positions) / len(positions))
                logit_means.append((side, sum(logits[t].mean().item() for t in positions), len(positions)))
            avgs.append(row_avgs)
    w = torch.tensor([a[0] for a in avgs], dtype=torch.float64)
    lo = torch.tensor([a[1] for a in avgs], dtype=torch.float64)
    expected = {
        "loss": (-F.logsigmoid(beta * (w - lo - ratio))).mean().item(),
        "rewards/chosen": (beta * w).mean().item(),
        "rewards/rejected": (beta * lo).mean().item(),
        "rewards/margins": (beta * (w - lo)).mean().item(),
        "rewards/accuracies": (w > lo).double().mean().item(),
        "logps/chosen": w.mean().item(),
        "logps/rejected": lo.mean().item(),
    }
    for side in ("chosen", "rejected"):  # per batch of 4 pairs: mean over its response positions
        sums = [(s, n) for k, s, n in logit_means if k == side]
        batches = [sums[i : i + 4] for i in range(0, 16, 4)]
        per_batch = [sum(s for s, _ in b) / sum(n for _, n in b) for b in batches]
        expected[f"logits/{side}"] = sum(per_batch) / len(per_batch)
    for stat, value in expected.items():
        assert logged[stat] == pytest.approx(value, rel=1e-5, abs=1e-6), stat


def test_writes_checkpoints_config_and_a_reloadable_hf_export(finished_run):
    run_dir, _ = finished_run
    assert (run_dir / "config.yaml").is_file()
    ckpts = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert {"last.ckpt", "step000003.ckpt", "step000006.ckpt"} <= ckpts
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6
    assert ckpt["hyper_parameters"]["config"]["loss"]["beta"] == 2.0

    model = AutoModelForCausalLM.from_pretrained(run_dir / "hf")
    exported = model.state_dict()
    trained = {k.removeprefix("policy."): v for k, v in ckpt["state_dict"].items()}
    assert set(trained) <= set(exported)
    for name, tensor in trained.items():
        assert torch.equal(exported[name], tensor), name
    assert (run_dir / "hf" / "model.safetensors").is_file()

    tokenizer = AutoTokenizer.from_pretrained(run_dir / "hf")
    messages = [{"role": "user", "content": "hi"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False).startswith("<|begin_of_text|><|start_header_id|>")
    ids = torch.tensor([tokenizer("hello there")["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, 3, 128256)


def test_resume_from_last_continues_at_the_right_step(finished_run, tmp_path):
    """A run stopped after step 3 (its step-3 checkpoint as last.ckpt, its first rows of metrics.csv) resumes
    at step 3 on the same LR schedule and appends to metrics.csv."""
    straight_dir, _ = finished_run
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(straight_dir / "checkpoints" / "step000003.ckpt", tmp_path / "checkpoints" / "last.ckpt")
    with (straight_dir / "metrics.csv").open() as src, (tmp_path / "metrics.csv").open("w") as dst:
        dst.writelines(line for line in src if not line.split(",")[1].isdigit() or int(line.split(",")[1]) < 3)

    train(compose_train(tmp_path, [*TINY_OVERRIDES, "ckpt_path=last"]))

    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    resumed, straight = read_metrics(tmp_path), read_metrics(straight_dir)
    assert [int(r["step"]) for r in resumed if r.get("train/loss")] == [0, 1, 2, 3, 4, 5]
    assert column(resumed, "train/lr") == pytest.approx(column(straight, "train/lr"))
    assert sorted(column(resumed, "val/loss")) == [0, 2, 5]  # no extra validation before a resumed fit


def test_ckpt_path_last_without_a_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"hydra.run.dir"):
        train(compose_train(tmp_path, [*TINY_OVERRIDES, "ckpt_path=last"]))


def test_sft_weight_logs_sft_loss(tmp_path):
    train(compose_train(tmp_path, [*TINY_OVERRIDES, "trainer.max_steps=2", "loss.sft_weight=1.0",
                                   "validate_before_training=false"]))  # fmt: skip
    rows = read_metrics(tmp_path)
    sft = column(rows, "train/sft_loss")
    assert sorted(sft) == [0, 1] and all(v > 5 for v in sft.values())  # ~ln(128256) = 11.8 at random init


def test_train_metrics_are_the_mean_over_the_accumulation_window(tmp_path):
    """With 2 micro-batches per step, train/loss is the pair-weighted mean of both micro-batches' losses."""
    overrides = [*TINY_OVERRIDES, "trainer.max_steps=2", "validate_before_training=false", "data.test_split=null"]
    train(compose_train(tmp_path / "one", [*overrides, "data.batch_size=8"]))
    train(compose_train(tmp_path / "two", [*overrides, "data.batch_size=4", "trainer.accumulate_grad_batches=2"]))
    # the same 8 pairs per optimizer step in both runs (the sampler cuts the same global order)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    for stat in ("loss", "rewards/accuracies", "rewards/margins", "logps/chosen"):
        assert column(two, f"train/{stat}")[0] == pytest.approx(column(one, f"train/{stat}")[0], abs=1e-5), stat
    assert sorted(column(two, "train/loss")) == [0, 1]
