"""A run never lies: it trains or says why not, stops on NaN, checkpoints on Ctrl-C, never overwrites a run, and
names the key of every bad setting before it writes anything."""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from data.tokenizers import load_tokenizer
from simpo.config.config_checks import ConfigError
from simpo.errors import UserError
from simpo.io import read_torch_file
from simpo.models.policy import build_policy, check_tokenizer_matches, tokenizer_source, warn_low_precision_weights
from simpo.runs.resume import CheckpointError
from simpo.runs.run_dir import RunDirError
from simpo.runs.run_status import NoTrainingError
from simpo.training.nonfinite import NonFiniteError
from tests.conftest import TINY_OVERRIDES, compose_train
from train import prepare, run_and_record, train

# Two optimizer steps of 4 pairs, validation on 8 pairs at the end only.
SHORT = [*TINY_OVERRIDES, "trainer.max_steps=2", "trainer.limit_val_batches=2", "trainer.val_check_interval=2",
         "callbacks.model_checkpoint.every_n_train_steps=2"]  # fmt: skip


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run directory with its bytes (to prove a command changed nothing)."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("two_steps")
    run_and_record(compose_train(run_dir, SHORT))
    return run_dir


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# ---- 1. extending a finished run continues it, or says what to change ----


def test_extending_a_finished_run_continues_from_its_data_position(two_step_run, tmp_path):
    run_dir = copy_run(two_step_run, tmp_path / "run")
    first = status(run_dir)
    assert first["status"] == "completed" and first["step"] == 2
    run_and_record(compose_train(run_dir, [*SHORT, "trainer.max_steps=4", "ckpt_path=last"]))
    record = status(run_dir)
    assert record["status"] == "completed" and record["step"] == 4
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert [a["status"] for a in record["attempts"]] == ["completed", "completed"]
    assert record["attempts"][0]["metrics"] == first["metrics"]  # the first attempt's results are kept
    assert record["attempts"][1]["changed"] == {"trainer.max_steps": {"before": 2, "after": 4}}
    loader = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["PreferenceDataModule"]
    assert loader["train_loader"]["batches_done"] == 4  # the epoch went on from batch 2, not from a new epoch
    # the first resumed step already runs at the new schedule's rate (4 steps, 1 of warmup), not at the 2-step
    # schedule's end (0): 1e-3 x (1 + cos(pi (2 - 1) / 3)) / 2
    with (run_dir / "metrics.csv").open(newline="") as handle:
        rates = {int(r["step"]): float(r["train/lr"]) for r in csv.DictReader(handle) if r.get("train/lr")}
    assert rates[2] == pytest.approx(1e-3 * (1 + math.cos(math.pi / 3)) / 2, rel=1e-6)
    assert rates[3] == pytest.approx(1e-3 * (1 + math.cos(2 * math.pi / 3)) / 2, rel=1e-6)


def test_resuming_a_run_with_nothing_left_to_train_is_refused_and_changes_nothing(two_step_run, tmp_path):
    run_dir = copy_run(two_step_run, tmp_path / "run")
    before = snapshot(run_dir)
    with pytest.raises(CheckpointError, match=r"nothing left to train.*step 2.*trainer\.max_steps=2.*raise trainer"):
        run_and_record(compose_train(run_dir, [*SHORT, "ckpt_path=last"]))
    assert snapshot(run_dir) == before


# ---- 2. non-finite loss, gradients or weights stop the run ----


def test_a_non_finite_loss_stops_the_run_names_metric_and_step_and_exports_nothing(tmp_path):
    overrides = [*SHORT, "loss.beta=1e39", "validate_before_training=false"]
    with pytest.raises(NonFiniteError, match=r"non-finite at step 0: train/loss=(inf|nan).*max_nonfinite_steps=0"):
        run_and_record(compose_train(tmp_path, overrides))
    record = status(tmp_path)
    assert record["status"] == "failed" and "NonFiniteError" in record["error"] and record["step"] == 0
    assert not (tmp_path / "hf").exists() and not (tmp_path / "checkpoints").exists()


def test_a_non_finite_validation_loss_before_training_stops_the_run(tmp_path):
    with pytest.raises(NonFiniteError, match=r"val/loss is not finite at step 0.*loss\.beta"):
        run_and_record(compose_train(tmp_path, [*SHORT, "loss.beta=1e39"]))
    assert status(tmp_path)["status"] == "failed"


class PoisonGradients(L.Callback):
    """Test helper: make the accumulated gradients NaN before the optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.step:
            next(pl_module.parameters()).grad.fill_(float("nan"))


class PoisonWeights(L.Callback):
    """Test helper: make one weight NaN after optimizer step ``step`` (before that step's checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


def test_a_bad_step_within_patience_is_skipped_and_counted(tmp_path):
    poison = [f"+callbacks.poison._target_={__name__}.PoisonGradients", "+callbacks.poison.step=1"]
    metrics = train(compose_train(tmp_path, [*SHORT, "trainer.max_steps=3", "max_nonfinite_steps=1", *poison]))
    assert metrics["train/skipped_steps"] == 1.0
    weights = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_bad_gradient_beyond_patience_stops_the_run(tmp_path):
    poison = [f"+callbacks.poison._target_={__name__}.PoisonGradients", "+callbacks.poison.step=1"]
    with pytest.raises(NonFiniteError, match=r"non-finite at step 1: train/grad_norm=nan"):
        train(compose_train(tmp_path, [*SHORT, "trainer.max_steps=3", *poison]))


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    poison = [f"+callbacks.poison._target_={__name__}.PoisonWeights", "+callbacks.poison.step=2",
              "trainer.max_steps=4"]  # fmt: skip
    with pytest.raises(NonFiniteError, match=r"not saving a checkpoint at step 2: the weights hold NaN/inf"):
        run_and_record(compose_train(tmp_path, [*SHORT, *poison]))
    assert not (tmp_path / "hf").exists()
    assert not list((tmp_path / "checkpoints").glob("*.ckpt")) if (tmp_path / "checkpoints").exists() else True


# ---- 4, 5. run directories are never overwritten; bad settings are refused before anything is written ----


def test_a_fresh_start_in_a_finished_run_directory_is_refused(two_step_run, tmp_path):
    run_dir = copy_run(two_step_run, tmp_path / "run")
    before = snapshot(run_dir)
    with pytest.raises(RunDirError, match=r"already holds a run.*status: completed.*ckpt_path=last.*overwrite=true"):
        run_and_record(compose_train(run_dir, SHORT))
    assert snapshot(run_dir) == before


def test_overwrite_replaces_the_earlier_run_and_only_its_own_files(two_step_run, tmp_path):
    run_dir = copy_run(two_step_run, tmp_path / "run")
    (run_dir / "notes.txt").write_text("not written by train.py")
    (run_dir / "another_run").mkdir()
    (run_dir / "another_run" / "status.json").write_text("{}")
    old_checkpoint = (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    run_and_record(compose_train(run_dir, [*SHORT, "overwrite=true"]))
    assert (run_dir / "notes.txt").read_text() == "not written by train.py"
    assert (run_dir / "another_run" / "status.json").read_text() == "{}"
    assert (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime_ns != old_checkpoint
    assert [a["status"] for a in status(run_dir)["attempts"]] == ["completed"]


def test_a_resume_with_adapters_a_full_checkpoint_never_had_is_refused_by_key(two_step_run, tmp_path):
    run_dir = copy_run(two_step_run, tmp_path / "run")
    before = snapshot(run_dir)
    with pytest.raises(CheckpointError, match=r"trained with another model than this config builds: peft: no "
                                              r"adapters in the checkpoint, peft=lora here; 21 weight\(s\) that this "
                                              r"run's policy lacks \(policy\.lm_head\.weight"):  # fmt: skip
        run_and_record(compose_train(run_dir, [*SHORT, "ckpt_path=last", "trainer.max_steps=3", "peft=lora"]))
    assert snapshot(run_dir) == before


def test_sequences_longer_than_the_models_context_are_refused_by_key(tmp_path):
    with pytest.raises(UserError, match=r"data\.max_length=2048 is longer than the model's context "
                                        r"\(max_position_embeddings=1024"):  # fmt: skip
        run_and_record(compose_train(tmp_path / "run", [*SHORT, "data.max_length=2048"]))
    with pytest.raises(UserError, match=r"max_position_embeddings=-5"):
        run_and_record(compose_train(tmp_path / "run", [*SHORT, "model.architecture.max_position_embeddings=-5"]))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_a_resume_on_other_data_is_refused_and_changes_nothing(two_step_run, tmp_path):
    from tests.reference.conftest import write_pairs

    run_dir = copy_run(two_step_run, tmp_path / "run")
    before = snapshot(run_dir)
    other = write_pairs(tmp_path / "other.jsonl", 64, skip=8)
    expected = r"trained on other data than this command gives.*saved position \(2 batches into an epoch\)"
    with pytest.raises(CheckpointError, match=expected + r".*model\.name_or_path=<its run>/hf"):
        run_and_record(compose_train(run_dir, [*SHORT, "ckpt_path=last", "trainer.max_steps=3",
                                               f"data.dataset={other}", "data.val_size=8"]))  # fmt: skip
    assert snapshot(run_dir) == before


def test_foreign_files_alone_are_no_run_and_stay(tmp_path):
    (tmp_path / "slurm-123.out").write_text("the scheduler's log")
    run_and_record(compose_train(tmp_path, SHORT))
    assert (tmp_path / "slurm-123.out").read_text() == "the scheduler's log"
    assert status(tmp_path)["status"] == "completed"


@pytest.mark.parametrize("overwrite", [False, True])
def test_run_files_that_no_run_left_are_in_the_way_even_with_overwrite(tmp_path, overwrite):
    (tmp_path / "metrics.csv").write_text("someone's numbers")
    (tmp_path / "hf").mkdir()
    (tmp_path / "thesis.tex").write_text("not a run")
    before = snapshot(tmp_path)
    with pytest.raises(RunDirError, match=r"holds hf, metrics.csv, which train.py writes.*no checkpoints, config.yaml,"
                                          r" status.json.*not removed, even with overwrite=true"):  # fmt: skip
        run_and_record(compose_train(tmp_path, [*SHORT, f"overwrite={str(overwrite).lower()}"]))
    assert snapshot(tmp_path) == before


def test_a_bad_value_on_resume_changes_nothing(two_step_run, tmp_path):
    run_dir = copy_run(two_step_run, tmp_path / "run")
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match=r"loss\.beta must be a number > 0, not 'abc'"):
        run_and_record(compose_train(run_dir, [*SHORT, "loss.beta=abc", "ckpt_path=last"]))
    assert snapshot(run_dir) == before


def test_resuming_with_a_changed_objective_warns_and_records_both_values(two_step_run, tmp_path, caplog):
    run_dir = copy_run(two_step_run, tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="train"):
        run_and_record(compose_train(run_dir, [*SHORT, "loss.beta=3.0", "trainer.max_steps=3", "ckpt_path=last"]))
    assert "loss.beta: 2.0 -> 3.0" in caplog.text and "learning-rate schedule is recomputed" in caplog.text
    changed = status(run_dir)["attempts"][-1]["changed"]
    assert changed["loss.beta"] == {"before": 2.0, "after": 3.0}
    assert OmegaConf.load(run_dir / "config.yaml").loss.beta == 2.0  # the run's original settings stay


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("loss.beta=abc", r"loss\.beta must be a number > 0, not 'abc'"),
        ("optimizer.lr=-1", r"optimizer\.lr must be a positive number, not -1"),
        ("trainer.max_steps=0", r"trainer\.max_steps must be .*not 0 \(0 steps trains nothing"),
        ("trainer.limit_train_batches=0", r"trainer\.limit_train_batches must be .*0 trains nothing"),
        ("model.chunk_size=0", r"model\.chunk_size must be null or a positive integer"),
        ("optimizer.betas=[0.9]", r"optimizer\.betas must be two numbers"),
        ("max_nonfinite_steps=-1", r"max_nonfinite_steps must be an integer >= 0"),
        ("optimized_metric_direction=up", r"optimized_metric_direction must be maximize or minimize"),
    ],
)
def test_bad_settings_are_named_before_anything_is_written(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        run_and_record(compose_train(tmp_path / "run", [*SHORT, override]))
    assert not (tmp_path / "run").exists()


def test_a_missing_model_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.name_or_path=\./no/such/model: no such directory"):
        prepare(compose_train(tmp_path, ["model.name_or_path=./no/such/model"]))


def test_a_truncated_checkpoint_is_named_with_the_alternatives(two_step_run, tmp_path):
    run_dir = copy_run(two_step_run, tmp_path / "run")
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"last\.ckpt is not a complete checkpoint.*step000002\.ckpt"):
        run_and_record(compose_train(run_dir, [*SHORT, "trainer.max_steps=4", "ckpt_path=last"]))


class StopAtStart(L.Callback):
    """Test helper: a callback that stops the fit before its first step."""

    def on_train_start(self, trainer, pl_module) -> None:
        trainer.should_stop = True


def test_a_run_that_takes_no_step_is_not_completed(tmp_path):
    stop = [f"+callbacks.stop._target_={__name__}.StopAtStart", "validate_before_training=false"]
    with pytest.raises(NoTrainingError, match=r"ended at step 0 without training.*trainer\.max_steps"):
        run_and_record(compose_train(tmp_path, [*SHORT, *stop]))
    assert status(tmp_path)["status"] == "failed"


class SlowFirstStep(L.Callback):
    """Test helper: a first step that takes 2 s (a compile, a cold file system), so a 1 s ``trainer.max_time`` ends the
    run right after it."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0:
            time.sleep(2)


def test_a_run_stopped_inside_its_warmup_at_learning_rate_0_is_not_completed_and_exports_nothing(tmp_path):
    """``trainer.max_time`` reached after the first step, which warmup runs at learning rate 0: the weights never
    moved, so the run is not ``completed`` and no export poses as a trained model."""
    timed = ["+trainer.max_time=00:00:00:01", f"+callbacks.slow._target_={__name__}.SlowFirstStep",
             "trainer.max_steps=40", "optimizer.warmup_ratio=0.1", "trainer.val_check_interval=40",
             "validate_before_training=false"]  # fmt: skip
    with pytest.raises(NoTrainingError, match=r"stopped at step 1 \(trainer\.max_time=00:00:00:01\) inside its "
                                              r"learning-rate warmup.*every step it took ran at learning rate 0"):
        run_and_record(compose_train(tmp_path, [*SHORT, *timed]))
    assert status(tmp_path)["status"] == "failed" and not (tmp_path / "hf").exists()
    assert read_torch_file(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 1  # the warmup can continue


# ---- 6. fp32 master weights by default; a warning for 16-bit weights with a tiny learning rate ----


def test_pretrained_models_keep_fp32_weights_and_the_precision_follows_the_device(tmp_path):
    cfg = compose_train(tmp_path, ["model=hf", "model.name_or_path=some/model"])
    assert cfg.model.dtype == "float32"
    assert cfg.trainer.precision == ("bf16-mixed" if torch.cuda.is_available() else "32-true")


def test_16_bit_weights_with_a_tiny_learning_rate_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="simpo.models.policy"):
        assert warn_low_precision_weights("bfloat16", 6e-7)
    assert "model.dtype=bfloat16" in caplog.text and "trainer.precision=bf16-mixed" in caplog.text
    assert not warn_low_precision_weights("float32", 6e-7) and not warn_low_precision_weights("bfloat16", 1e-3)


# ---- 7. the tokenizer follows the model; a tokenizer of another model is refused ----


@pytest.fixture(scope="module")
def mistral_vocab_model(tmp_path_factory) -> Path:
    """A tiny random Llama with the Mistral v1 vocabulary (32,000 ids), saved like a hub model."""
    directory = tmp_path_factory.mktemp("mistral_vocab_model")
    tokenizer = load_tokenizer("mistral-v1")
    arch = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1}  # fmt: skip
    build_policy(tokenizer, architecture=arch).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_the_tokenizer_follows_model_name_or_path(mistral_vocab_model, tmp_path):
    cfg = compose_train(tmp_path, [f"model.name_or_path={mistral_vocab_model}"])
    assert tokenizer_source(cfg.model.tokenizer, cfg.model.name_or_path) == str(mistral_vocab_model)
    assert len(prepare(cfg).datamodule.tokenizer) == 32000
    default = compose_train(tmp_path, []).model
    assert tokenizer_source(default.tokenizer, default.name_or_path) == "llama3"  # random init: the bundled default


def test_a_tokenizer_of_another_model_is_refused(mistral_vocab_model, tmp_path):
    cfg = compose_train(tmp_path, [f"model.name_or_path={mistral_vocab_model}", "model.tokenizer=llama3"])
    with pytest.raises(ValueError, match=r"model\.tokenizer has 128256 tokens but the model's embedding only 32000"):
        prepare(cfg)


def test_a_much_smaller_tokenizer_or_another_bos_is_refused():
    llama = load_tokenizer("llama3")
    config = type("Config", (), {"bos_token_id": 128000})()
    with pytest.raises(ValueError, match=r"model\.tokenizer has 32000 tokens but the model's embedding 128256 rows"):
        check_tokenizer_matches(config, load_tokenizer("mistral-v1"), 128256)
    other_bos = type("Config", (), {"bos_token_id": 1})()
    with pytest.raises(ValueError, match=r"BOS token is id 128000 .* bos_token_id=1"):
        check_tokenizer_matches(other_bos, llama, 128256)
    check_tokenizer_matches(config, llama, 128256 + 64)  # a padded embedding is fine


# ---- 11. short runs log their steps; a warmup that leaves no training is an error ----


def test_a_one_step_run_logs_its_step(tmp_path):
    overrides = [*TINY_OVERRIDES, "trainer.max_steps=1", "trainer.log_every_n_steps=10", "optimizer.warmup_ratio=0",
                 "validate_before_training=false", "data.test_split=null"]  # fmt: skip
    train(compose_train(tmp_path, overrides))
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    loss = [r.split(",")[header.index("train/loss")] for r in rows[1:]]
    assert len(loss) == 1 and math.isfinite(float(loss[0]))


def test_a_warmup_that_leaves_no_training_is_an_error(tmp_path):
    overrides = [*TINY_OVERRIDES, "trainer.max_steps=1", "validate_before_training=false", "data.test_split=null"]
    with pytest.raises(ValueError, match=r"optimizer\.warmup_ratio=0\.1 of a single optimizer step"):
        train(compose_train(tmp_path, overrides))


# ---- found by hostile testing ----


MORE_BAD = [
    ("overwrite=no", r"overwrite must be true or false, not 'no'"),
    ("+model.foo=1", r"model\.foo is not a setting of the model group"),
    ("+trainer.foo=1", r"trainer: .*foo.*\+trainer\.<name>"),
    ("trainer.val_check_interval=0", r"trainer\.val_check_interval must be"),
    ("trainer.precision=foo", r"trainer\.precision must be one of"),
    ("+optimizer.foo=1", r"optimizer\.foo is not a setting of the optimizer \(it would do nothing\)"),
    ("model=hf", r"model\.name_or_path must be set: it has no default \(model=hf: the hub id or local directory"),
]


@pytest.mark.parametrize(("override", "match"), MORE_BAD)
def test_more_bad_settings_are_named(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        prepare(compose_train(tmp_path / "run", [*SHORT, override]))
    assert not (tmp_path / "run").exists()


def test_auto_never_clears_a_directory_that_holds_no_run(tmp_path):
    (tmp_path / "thesis.tex").write_text("not a run")
    run = prepare(compose_train(tmp_path, [*SHORT, "ckpt_path=auto"]))
    assert run.plan.ckpt_path is None and run.plan.cleared == ()  # a fresh start beside the foreign file
    assert (tmp_path / "thesis.tex").read_text() == "not a run"


def test_another_runs_checkpoint_cannot_continue_into_a_used_directory(two_step_run, tmp_path):
    other = copy_run(two_step_run, tmp_path / "other")
    before = snapshot(other)
    ckpt = two_step_run / "checkpoints" / "last.ckpt"
    with pytest.raises(RunDirError, match=r"belongs to another run.*would overwrite it"):
        run_and_record(compose_train(other, [*SHORT, f"ckpt_path={ckpt}", "trainer.max_steps=3"]))
    assert snapshot(other) == before


def test_a_run_whose_every_step_was_skipped_is_not_completed(tmp_path):
    overrides = [*SHORT, "loss.beta=1e30", "max_nonfinite_steps=10", "validate_before_training=false"]
    with pytest.raises(NoTrainingError, match=r"all 2 optimizer steps of this run were skipped as non-finite"):
        run_and_record(compose_train(tmp_path, overrides))
    record = status(tmp_path)
    assert record["status"] == "failed" and not (tmp_path / "hf").exists()


def test_bad_data_or_another_seed_on_resume_changes_nothing(two_step_run, tmp_path):
    run_dir = copy_run(two_step_run, tmp_path / "run")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    before = snapshot(run_dir)
    with pytest.raises(ValueError, match=r"holds no rows"):
        run_and_record(compose_train(run_dir, [*SHORT, "trainer.max_steps=4", "ckpt_path=last",
                                               f"data.dataset={empty}"]))  # fmt: skip
    with pytest.raises(CheckpointError, match=r"seed=1 differs from the checkpoint's seed=42"):
        run_and_record(compose_train(run_dir, [*SHORT, "trainer.max_steps=4", "ckpt_path=last", "seed=1"]))
    with pytest.raises(CheckpointError, match=r"4 pairs per global batch .* this run has 8"):
        run_and_record(compose_train(run_dir, [*SHORT, "trainer.max_steps=4", "ckpt_path=last", "data.batch_size=8"]))
    assert snapshot(run_dir) == before


def test_nan_pretrained_weights_are_named(tmp_path, mistral_vocab_model):
    poisoned = copy_run(mistral_vocab_model, tmp_path / "model")
    from safetensors.torch import load_file, save_file

    weights = load_file(poisoned / "model.safetensors")
    next(iter(weights.values())).view(-1)[0] = float("nan")
    save_file(weights, poisoned / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model\.name_or_path=.*the weights hold NaN or Inf"):
        prepare(compose_train(tmp_path / "run", [f"model.name_or_path={poisoned}"]))
    (tmp_path / "no_tokenizer").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(mistral_vocab_model / name, tmp_path / "no_tokenizer" / name)
    with pytest.raises(FileNotFoundError, match=r"model\.name_or_path=.*holds no tokenizer files"):
        prepare(compose_train(tmp_path / "run", [f"model.name_or_path={tmp_path / 'no_tokenizer'}"]))
