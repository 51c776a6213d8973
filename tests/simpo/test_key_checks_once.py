"""The loss keys, the seeds, ``data.max_tokens_per_batch`` and ``ckpt_path`` are each checked by one function with
one wording, whichever command or object the value reaches first; and before anything is written."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from simpo.errors import ConfigError
from simpo.evaluation.settings import validate_settings
from simpo.objectives import CPO, DPO, SimPO
from simpo.sampling.settings import check_sample_config
from tests.conftest import ROOT, compose_train
from train import prepare


def message(call) -> str:
    with pytest.raises(ConfigError) as error:
        call()
    return str(error.value)


def compose_other(name: str, tmp_path, overrides: list[str]):
    """``conf/evaluate.yaml`` or ``conf/sample.yaml`` with ``overrides``."""
    key = "run_dir" if name == "evaluate" else "output_dir"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(name, overrides=[f"{key}={tmp_path / name}", *overrides])


@pytest.mark.parametrize(("override", "objective", "expected"), [
    ("loss.beta=abc", lambda: SimPO(beta="abc"), "loss.beta must be a number > 0, not 'abc'"),
    ("loss.beta=0", lambda: DPO(beta=0), "loss.beta must be a number > 0, not 0"),
    ("loss.gamma_beta_ratio=nan", lambda: SimPO(gamma_beta_ratio=float("nan")),
     "loss.gamma_beta_ratio must be a finite number, not nan"),
    ("loss.label_smoothing=0.5", lambda: SimPO(label_smoothing=0.5),
     "loss.label_smoothing must be a number in [0, 0.5), not 0.5"),
    ("loss.sft_weight=-1", lambda: CPO(sft_weight=-1), "loss.sft_weight must be a number >= 0, not -1"),
])  # fmt: skip
def test_a_loss_key_has_the_objectives_wording_in_train(tmp_path, override, objective, expected):
    loss = ["loss=cpo"] if "sft_weight" in override else []
    run = tmp_path / "run"
    assert message(lambda: prepare(compose_train(run, [*loss, override]))) == expected
    assert message(objective) == expected
    assert not run.exists()


def test_every_seed_key_has_one_rule_and_wording(tmp_path):
    from data.datamodule import PreferenceDataModule

    expected = "must be an integer in [0, 2**32) (numpy seeds take no other), not -1"
    found = {
        message(lambda: prepare(compose_train(tmp_path / "run", ["seed=-1"]))),
        message(lambda: validate_settings(compose_other("evaluate", tmp_path, ["seed=-1"]))),
        message(lambda: check_sample_config(compose_other("sample", tmp_path, ["seed=-1"]))),
    }
    assert found == {f"seed {expected}"}
    assert message(lambda: PreferenceDataModule(dataset="x.jsonl", tokenizer=None, seed=-1)) == f"data.seed {expected}"
    assert message(lambda: validate_settings(compose_other("evaluate", tmp_path, ["seed=2**40"])))  # a string


def test_the_token_budget_and_ckpt_path_are_named_before_anything_is_written(tmp_path):
    run = tmp_path / "run"
    for override, expected in [
        ("data.max_tokens_per_batch=0", "data.max_tokens_per_batch must be a positive integer or null, not 0"),
        ("ckpt_path=1", "ckpt_path must be a path, last, auto or null, not 1"),
    ]:
        assert message(lambda: prepare(compose_train(run, [override]))) == expected  # noqa: B023
        assert not run.exists()
