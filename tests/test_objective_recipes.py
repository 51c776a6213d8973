"""The DPO recipes of the six released settings: each is its SimPO recipe with the seed README's DPO values."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from simpo.config.entrypoint import build_loss
from simpo.objectives import DPO
from tests.conftest import compose_train

# The seed README's table "For DPO, the best hyperparameters for each setting": (SimPO recipe, DPO beta, DPO lr).
# Nothing else differs (the released SimPO and DPO models of a setting share model, data, batch and schedule).
DPO_RECIPES = {
    "mistral-7b-base-dpo": ("mistral-7b-base-simpo", 0.01, 5e-7),
    "mistral-7b-instruct-dpo": ("mistral-7b-instruct-simpo", 0.01, 5e-7),
    "llama-3-8b-base-dpo": ("llama-3-8b-base-simpo", 0.01, 5e-7),
    "llama-3-8b-instruct-dpo": ("llama-3-8b-instruct-simpo", 0.01, 7e-7),
    "llama-3-8b-instruct-dpo-v2": ("llama-3-8b-instruct-simpo-v2", 0.01, 3e-7),
    "gemma-2-9b-it-dpo": ("gemma-2-9b-it-simpo", 0.01, 5e-7),
}


def without_objective(cfg) -> dict:
    """The composed config (unresolved) less what an objective's recipe chooses: ``loss`` and ``optimizer.lr``."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    del tree["loss"], tree["optimizer"]["lr"]
    return tree


@pytest.mark.parametrize("name", sorted(DPO_RECIPES))
def test_dpo_recipe_is_its_simpo_recipe_with_the_seed_values(tmp_path, name):
    simpo_name, beta, lr = DPO_RECIPES[name]
    dpo, simpo = compose_train(tmp_path, [f"experiment={name}"]), compose_train(tmp_path, [f"experiment={simpo_name}"])
    assert without_objective(dpo) == without_objective(simpo)
    assert OmegaConf.to_container(dpo.loss) == {"_target_": "simpo.objectives.dpo.DPO", "beta": beta,
                                                "label_smoothing": 0.0, "loss_type": "sigmoid"}  # fmt: skip
    assert dpo.optimizer.lr == pytest.approx(lr, rel=1e-12)
    assert OmegaConf.to_container(dpo.reference) == {"mode": "cached", "name_or_path": None}  # the initial policy
    objective = build_loss(OmegaConf.to_container(dpo.loss, resolve=True))
    assert isinstance(objective, DPO) and objective.needs_reference


def test_command_line_still_overrides_a_dpo_recipe(tmp_path):
    cfg = compose_train(tmp_path, ["experiment=llama-3-8b-instruct-dpo", "reference=model", "loss.beta=0.05"])
    assert cfg.reference.mode == "model" and cfg.loss.beta == 0.05 and cfg.optimizer.lr == pytest.approx(7e-7)


def test_a_setting_alone_holds_no_objective(tmp_path):
    """``experiment=setting/<name>`` (what the sweeps pair with) brings the setting but neither loss keys nor lr."""
    plain = compose_train(tmp_path)
    setting = compose_train(tmp_path, ["experiment=setting/gemma-2-9b-it"])
    assert setting.loss == plain.loss and setting.optimizer.lr == plain.optimizer.lr
    assert setting.model.name_or_path == "google/gemma-2-9b-it" and setting.data.global_batch_size == 128


# The bundled default's recipes for the two summed-log-prob objectives that do not learn it in the default run:
# (experiment, loss config, lr, epochs); everything else is the default run's (benchmarks/RESULTS.md, issue 12).
TINY_RECIPES = {
    "tiny-cpo": ({"_target_": "simpo.objectives.cpo.CPO", "beta": 0.1, "sft_weight": 1.0, "label_smoothing": 0.0},
                 2e-3, 3),
    "tiny-slic": ({"_target_": "simpo.objectives.slic.SLiC", "delta": 1.0, "sft_weight": 10.0}, 2e-3, 3),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TINY_RECIPES))
def test_tiny_recipe_is_experiment_tiny_with_its_objective_lr_and_epochs(tmp_path, name):
    loss, lr, epochs = TINY_RECIPES[name]
    recipe, default = compose_train(tmp_path, [f"experiment={name}"]), compose_train(tmp_path, ["experiment=tiny"])
    assert OmegaConf.to_container(recipe.loss) == loss
    assert recipe.optimizer.lr == pytest.approx(lr, rel=1e-12) and recipe.trainer.max_epochs == epochs
    for cfg in (recipe, default):
        del cfg.loss, cfg.optimizer.lr, cfg.trainer.max_epochs
    assert OmegaConf.to_container(recipe, resolve=False) == OmegaConf.to_container(default, resolve=False)
