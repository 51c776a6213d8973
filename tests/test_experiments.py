"""Every released recipe composes with the paper's values; the global batch derives accumulation."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from simpo.core.global_batch import accumulation_steps
from tests.conftest import ROOT, TINY_OVERRIDES, compose_train
from train import set_accumulation

# recipe: (model, dataset, train split, test split, beta, gamma/beta, lr, max_length, max_prompt_length)
RECIPES = {
    "mistral-7b-base-simpo": ("alignment-handbook/zephyr-7b-sft-full", "HuggingFaceH4/ultrafeedback_binarized",
                              "train_prefs", "test_prefs", 2.0, 0.8, 3e-7, 1024, 512),
    "mistral-7b-instruct-simpo": ("mistralai/Mistral-7B-Instruct-v0.2", "princeton-nlp/mistral-instruct-ultrafeedback",
                                  "train", "test", 2.5, 0.1, 5e-7, 2048, 1800),
    "llama-3-8b-base-simpo": ("princeton-nlp/Llama-3-Base-8B-SFT", "HuggingFaceH4/ultrafeedback_binarized",
                              "train_prefs", "test_prefs", 2.0, 0.5, 6e-7, 2048, 1800),
    "llama-3-8b-instruct-simpo": ("meta-llama/Meta-Llama-3-8B-Instruct", "princeton-nlp/llama3-ultrafeedback",
                                  "train", "test", 2.5, 0.55, 1e-6, 2048, 1800),
    "llama-3-8b-instruct-simpo-v2": ("meta-llama/Meta-Llama-3-8B-Instruct",
                                     "princeton-nlp/llama3-ultrafeedback-armorm", "train", "test", 10.0, 0.3, 1e-6,
                                     2048, 1800),
    "gemma-2-9b-it-simpo": ("google/gemma-2-9b-it", "princeton-nlp/gemma2-ultrafeedback-armorm", "train", "test",
                            10.0, 0.5, 8e-7, 2048, 1800),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_values(tmp_path, name):
    cfg = compose_train(tmp_path, [f"experiment={name}"])
    model, dataset, train_split, test_split, beta, ratio, lr, max_length, max_prompt = RECIPES[name]
    assert cfg.model.name_or_path == model and cfg.model.tokenizer is None
    assert (cfg.data.dataset, cfg.data.train_split, cfg.data.test_split) == (dataset, train_split, test_split)
    assert (cfg.loss.beta, cfg.loss.gamma_beta_ratio, cfg.loss.sft_weight) == (beta, ratio, 0.0)
    assert cfg.optimizer.lr == pytest.approx(lr)
    assert (cfg.data.max_length, cfg.data.max_prompt_length) == (max_length, max_prompt)
    # shared by every release: global batch 128, 1 epoch, cosine + 10% warmup, bf16, checkpointing, seed 42
    assert cfg.data.global_batch_size == 128 and cfg.data.batch_size == 2
    assert cfg.trainer.max_epochs == 1 and cfg.optimizer.warmup_ratio == 0.1
    assert cfg.trainer.precision == "bf16-mixed" and cfg.model.gradient_checkpointing is True
    assert cfg.seed == 42
    assert cfg.trainer.strategy._target_ == "simpo.training.fsdp.AtomicModelParallelStrategy" and cfg.fsdp.meta_init
    assert cfg.model.attn_implementation == ("eager" if name.startswith("gemma") else "auto")
    # the released Gemma 2 and Mistral-Instruct templates refuse a lone assistant turn or a system message
    expected_template = {"gemma-2-9b-it-simpo": "gemma2", "mistral-7b-instruct-simpo": "mistral"}.get(name)
    assert cfg.data.chat_template == expected_template


def test_tiny_experiment_is_the_default(tmp_path):
    plain, tiny = compose_train(tmp_path), compose_train(tmp_path, ["experiment=tiny"])
    assert plain.model == tiny.model and plain.data == tiny.data and plain.loss == tiny.loss


def test_accumulation_from_global_batch():
    assert accumulation_steps(128, 2, 4) == 16  # the reference: 2 per device x 16 x 4 GPUs
    assert accumulation_steps(128, 2, 64) == 1
    with pytest.raises(ValueError, match=r"global_batch_size=128 .*data.batch_size=3 x 4 devices"):
        accumulation_steps(128, 3, 4)


def test_trainer_gets_the_derived_accumulation(tmp_path):
    cfg = compose_train(tmp_path, [*TINY_OVERRIDES, "data.global_batch_size=16"])  # 4 pairs x 1 device x 4
    trainer = instantiate(cfg.trainer, logger=False)
    set_accumulation(trainer, cfg)
    assert trainer.accumulate_grad_batches == 4
    contradicting = compose_train(tmp_path, [*TINY_OVERRIDES, "data.global_batch_size=16",
                                             "trainer.accumulate_grad_batches=2"])  # fmt: skip
    with pytest.raises(ValueError, match="set only one of them"):
        set_accumulation(instantiate(contradicting.trainer, logger=False), contradicting)


@pytest.mark.parametrize("search", ["simpo_grid", "simpo_optuna"])
def test_hparams_search_configs_compose(search):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={search}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert set(params) == {"optimizer.lr", "loss.beta", "loss.gamma_beta_ratio"}
    if search == "simpo_grid":
        assert params["optimizer.lr"] == "3e-7,5e-7,8e-7,1e-6" and params["loss.beta"] == "2.0,2.5,10.0"
    else:
        assert cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.sweeper.n_trials == 20
