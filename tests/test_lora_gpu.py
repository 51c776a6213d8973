"""QLoRA on a GPU (``-m gpu``; skipped without CUDA or bitsandbytes): a tiny pretrained Llama loaded in 4-bit NF4
trains its adapters, checkpoints them alone, and exports a merged full-precision model and the adapter alone."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.conftest import compose_train
from tests.test_lora import RUN, tiny_policy
from train import prepare, train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA needs a CUDA GPU"),
]


def test_qlora_trains_checkpoints_adapters_and_exports(tmp_path, llama3_tokenizer):
    pytest.importorskip("bitsandbytes")
    base = tmp_path / "base"
    tiny_policy(llama3_tokenizer, seed=11).save_pretrained(base)
    llama3_tokenizer.save_pretrained(base)
    common = [*RUN, "model=hf", f"model.name_or_path={base}", "peft=qlora", "trainer.accelerator=gpu",
              "trainer.devices=1", "trainer.precision=bf16-mixed", "data.batch_size=2"]  # fmt: skip
    run = prepare(compose_train(tmp_path / "merged", common))
    quantized = [n for n, m in run.module.policy.named_modules() if type(m).__name__ == "Linear4bit"]
    assert len(quantized) == 2 * 7  # every projection of both layers in NF4
    train(compose_train(tmp_path / "merged", [*common, "overwrite=true"]))
    state = torch.load(tmp_path / "merged" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state and all("lora_" in k for k in state)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged" / "hf")
    assert getattr(merged.config, "quantization_config", None) is None
    ids = torch.tensor([[128000, 9906, 1917, 11, 1268, 527, 499]])
    assert torch.isfinite(merged(input_ids=ids).logits).all()
    assert merged.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, ids.shape[1] + 3)

    train(compose_train(tmp_path / "adapter", [*common, "peft.export=adapter"]))
    from peft import PeftModel

    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "adapter" / "hf")
    assert torch.isfinite(adapted(input_ids=ids).logits).all()
