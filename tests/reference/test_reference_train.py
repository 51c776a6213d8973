"""``train.py`` with an objective that needs a reference: the cached table is computed once and reused, equals a
live frozen reference over training steps, and every bad reference setting is refused naming its key before
anything is written."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from simpo.config.config_checks import ConfigError
from tests.conftest import TINY_OVERRIDES, compose_train
from train import train


def overrides(pairs: Path, *more: str) -> list[str]:
    return [*TINY_OVERRIDES, f"data.dataset={pairs}", "data.val_size=8", "trainer.max_steps=3",
            "trainer.val_check_interval=3", "callbacks.model_checkpoint.every_n_train_steps=3", *more]  # fmt: skip


def losses(run_dir: Path) -> dict[int, float]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("simpo_cache")


def test_cached_reference_is_computed_once_reused_and_equals_a_live_reference(small_pairs, tmp_path, cache_dir,
                                                                             monkeypatch, caplog):  # fmt: skip
    monkeypatch.setenv("SIMPO_CACHE", str(cache_dir))
    caplog.set_level("INFO")
    first = train(compose_train(tmp_path / "a", overrides(small_pairs, "loss=dpo", "loss.beta=0.1")))
    tables = list((cache_dir / "reference").glob("*.pt"))
    assert len(tables) == 1 and "computed 32 pairs' reference log-probs" in caplog.text
    assert first["val/rewards/margins"] != 0.0  # the policy moved away from its reference

    caplog.clear()
    train(compose_train(tmp_path / "b", overrides(small_pairs, "loss=dpo", "loss.beta=0.1")))
    assert "loaded from" in caplog.text and "computed" not in caplog.text
    assert list((cache_dir / "reference").glob("*.pt")) == tables  # beta is not part of the key

    train(compose_train(tmp_path / "c", overrides(small_pairs, "loss=dpo", "loss.beta=0.1", "reference=model")))
    cached, live = losses(tmp_path / "a"), losses(tmp_path / "c")
    assert sorted(cached) == [0, 1, 2]
    for step, value in cached.items():
        assert value == pytest.approx(live[step], abs=1e-6), step


def test_other_data_builds_another_table(small_pairs, tmp_path, cache_dir, monkeypatch):
    from tests.reference.conftest import write_pairs

    monkeypatch.setenv("SIMPO_CACHE", str(cache_dir))
    other = write_pairs(tmp_path / "other.jsonl", 32, skip=32)
    before = set((cache_dir / "reference").glob("*.pt")) if (cache_dir / "reference").exists() else set()
    train(compose_train(tmp_path / "run", overrides(other, "loss=dpo", "trainer.max_steps=2")))
    assert len(set((cache_dir / "reference").glob("*.pt")) - before) == 1


@pytest.mark.parametrize(
    ("more", "error", "match"),
    [
        (["loss=dpo", "~reference"], ValueError, r"loss=DPO needs a reference model: set reference=cached"),
        (["loss=ipo", "reference.mode=frozen"], ValueError, r"reference\.mode must be one of"),
        (["loss=dpo", "reference.name_or_path=./no/such/model"], FileNotFoundError, r"reference\.name_or_path"),
        (["loss=kto", "reference=adapter_off"], ValueError, r"reference=adapter_off needs LoRA adapters"),
        (["loss=dpo", "loss.beta=0"], ValueError, r"loss\.beta must be a (positive number|number > 0)"),
        (["loss=ipo", "loss.tau=-1"], ValueError, r"loss\.tau must be a number > 0"),
    ],
)
def test_bad_reference_settings_are_refused_before_anything_is_written(small_pairs, tmp_path, more, error, match):
    run_dir = tmp_path / "run"
    with pytest.raises((error, ConfigError), match=match):
        train(compose_train(run_dir, overrides(small_pairs, *more)))
    assert not run_dir.exists() or not any(run_dir.iterdir())


@pytest.mark.slow
def test_lora_reference_defaults_to_adapters_off_and_equals_the_cached_base(small_pairs, tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPO_CACHE", str(tmp_path / "cache"))
    assert compose_train(tmp_path / "x", ["peft=lora"]).reference.mode == "adapter_off"
    assert compose_train(tmp_path / "x", ["peft=lora", "reference=cached"]).reference.mode == "cached"
    more = ["peft=lora", "optimizer.lr=1e-2", "loss=dpo", "loss.beta=0.1"]
    train(compose_train(tmp_path / "off", overrides(small_pairs, *more)))
    train(compose_train(tmp_path / "cached", overrides(small_pairs, *more, "reference=cached")))
    off, cached = losses(tmp_path / "off"), losses(tmp_path / "cached")
    assert sorted(off) == [0, 1, 2] and off[2] != off[0]  # the adapters trained away from the base
    for step, value in off.items():
        assert value == pytest.approx(cached[step], abs=1e-6), step


def first_val_loss(run_dir: Path) -> float:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return next(float(r["val/loss"]) for r in csv.DictReader(handle) if r.get("val/loss"))


@pytest.mark.slow  # three training runs (~13 s)
def test_a_resume_with_an_empty_cache_computes_the_reference_from_the_reference(small_pairs, tmp_path, monkeypatch):
    """A DPO run resumed where its reference table is missing must compute it from the initial policy (rebuilt),
    never from the trained weights it just loaded: a later fresh run that finds the table starts at ln 2."""
    import math
    import shutil

    cache = tmp_path / "cache"
    monkeypatch.setenv("SIMPO_CACHE", str(cache))
    dpo = ["loss=dpo", "loss.beta=0.1", "optimizer.lr=1e-3", "trainer.max_steps=2", "trainer.val_check_interval=2",
           "callbacks.model_checkpoint.every_n_train_steps=2"]  # fmt: skip
    train(compose_train(tmp_path / "a", overrides(small_pairs, *dpo)))
    shutil.rmtree(cache / "reference")  # another node, or a cleaned cache
    train(compose_train(tmp_path / "a", overrides(small_pairs, *dpo, "ckpt_path=last", "trainer.max_steps=4")))
    assert len(list((cache / "reference").glob("*.pt"))) == 1
    train(compose_train(tmp_path / "b", overrides(small_pairs, *dpo)))  # loads the table the resume stored
    assert first_val_loss(tmp_path / "b") == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at step 0


@pytest.mark.slow  # three DPO runs and a reference saved twice (~25 s)
def test_reference_weights_replaced_in_place_key_a_new_table(small_pairs, tmp_path, monkeypatch, caplog):
    """A reference directory whose weights are replaced in place with the same size and modification time (``touch
    -r``) must not reuse the table of the old weights: tables are keyed by the files' contents. The new table's
    step-0 margins equal those of a live frozen copy of the new weights."""
    import os

    import torch

    from data.tokenizers import load_tokenizer
    from simpo.models.policy import build_policy

    monkeypatch.setenv("SIMPO_CACHE", str(tmp_path / "cache"))
    tokenizer, reference = load_tokenizer("llama3"), tmp_path / "reference"
    architecture = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
                    "rope_theta": 500000.0, "tie_word_embeddings": True}  # fmt: skip

    def save_reference(seed: int) -> None:
        torch.manual_seed(seed)
        build_policy(tokenizer, architecture=architecture).save_pretrained(reference)

    save_reference(12)
    tokenizer.save_pretrained(reference)
    dpo = ["loss=dpo", "loss.beta=0.1", "trainer.max_steps=2", f"reference.name_or_path={reference}"]
    train(compose_train(tmp_path / "a", overrides(small_pairs, *dpo)))
    weights = reference / "model.safetensors"
    old = weights.stat()
    save_reference(13)  # other weights, same size
    os.utime(weights, ns=(old.st_atime_ns, old.st_mtime_ns))  # touch -r: the old modification time
    assert weights.stat().st_size == old.st_size and weights.stat().st_mtime_ns == old.st_mtime_ns
    caplog.clear()
    caplog.set_level("INFO")
    train(compose_train(tmp_path / "b", overrides(small_pairs, *dpo)))
    assert "reference log-probs in" in caplog.text and "reference log-probs loaded from" not in caplog.text
    assert len(list((tmp_path / "cache" / "reference").glob("*.pt"))) == 2
    train(compose_train(tmp_path / "c", overrides(small_pairs, *dpo, "reference=model")))
    cached, live = (first_val(tmp_path / name, "val/rewards/margins") for name in ("b", "c"))
    assert cached == pytest.approx(live, abs=1e-6) and abs(cached) > 1e-4


def first_val(run_dir: Path, key: str) -> float:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return next(float(r[key]) for r in csv.DictReader(handle) if r.get(key))
