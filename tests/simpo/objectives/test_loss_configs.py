"""conf/loss/<name>.yaml and the OBJECTIVES registry agree with the classes: target, keys, defaults."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from simpo.objectives import OBJECTIVES, Objective

CONF = Path(__file__).resolve().parents[3] / "conf" / "loss"


def test_every_config_is_registered_and_every_objective_has_a_config():
    assert {p.stem for p in CONF.glob("*.yaml")} == set(OBJECTIVES)
    assert set(OBJECTIVES) == {"simpo", "dpo", "ipo", "rdpo", "cpo", "orpo", "slic", "rrhf", "kto"}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_config_targets_the_class_with_its_keys_and_defaults(name):
    cls = OBJECTIVES[name]
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    assert cfg._target_ == f"{cls.__module__}.{cls.__name__}"
    assert cls.__module__ == f"simpo.objectives.{name}"  # one file per objective, named like its config
    params = inspect.signature(cls.__init__).parameters
    defaults = {k: p.default for k, p in params.items() if k != "self"}
    keys = {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "_target_"}
    assert keys == defaults  # every key documented in the config, with the class's own default
    objective = instantiate(cfg)
    assert isinstance(objective, cls) and isinstance(objective, Objective)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_docstring_cites_the_paper(name):
    module = inspect.getmodule(OBJECTIVES[name])
    assert "arXiv 2" in module.__doc__
    assert "(B,)" in OBJECTIVES[name].__doc__
