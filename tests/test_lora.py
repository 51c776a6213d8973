"""LoRA through peft: the base as its own reference (adapters off), merged weights against a hand computation, bad
settings named before anything is written, and a tiny run that trains, resumes exactly from an adapter-only
checkpoint and exports the merged model and the adapter alone (both evaluate alike)."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from simpo.core.labelled_head import attach_labelled_logps
from simpo.core.logprobs import labelled_positions, target_sequence_logps
from simpo.loading.policy_source import load_policy
from simpo.models.adapters import (
    AdapterSettings,
    adapters_disabled,
    apply_adapters,
    check_adapter_settings,
    default_target_modules,
    merged_state_dict,
)
from simpo.models.checkpointing import checkpointing_kwargs
from simpo.models.policy import build_policy
from tests.conftest import compose_train
from tests.test_resume import SendSignalAt, losses
from train import prepare, train

TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True}  # fmt: skip
LLAMA_PROJECTIONS = ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj")


def tiny_policy(tokenizer, seed: int = 0):
    torch.manual_seed(seed)
    return build_policy(tokenizer, architecture=TINY)


def randomise_adapters(policy) -> None:
    """Give every lora_B (zero at init, which would make the adapters invisible) random values."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)


def batch(tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(2, T) ids, attention mask and labels (the first 3 tokens unlabelled) of two sentences."""
    ids = torch.tensor([tokenizer.encode("Hello there, how are you today?")] * 2)
    ids[1, -3:] = torch.tensor(tokenizer.encode("A pair!", add_special_tokens=False)[:3])
    labels = ids.clone()
    labels[:, :3] = -100
    return ids, torch.ones_like(ids), labels


def test_default_targets_are_every_projection_of_the_decoder_layers(llama3_tokenizer):
    assert default_target_modules(tiny_policy(llama3_tokenizer)) == LLAMA_PROJECTIONS  # not lm_head


def test_adapters_disabled_equals_a_frozen_copy_of_the_base(llama3_tokenizer):
    policy = tiny_policy(llama3_tokenizer)
    base = copy.deepcopy(policy).requires_grad_(False)
    adapted = apply_adapters(policy, AdapterSettings(r=4, alpha=8, modules_to_save=("lm_head",)))
    randomise_adapters(adapted)
    with torch.no_grad():  # the trained copy of lm_head differs from the base's
        adapted.base_model.model.lm_head.modules_to_save["default"].weight.mul_(1.5)
    attach_labelled_logps(adapted, chunk_size=3)
    ids, mask, labels = batch(llama3_tokenizer)
    rows, positions, targets = labelled_positions(labels)
    target = (rows * ids.shape[1] + positions, targets, rows)
    with torch.no_grad():
        expected = base(input_ids=ids, attention_mask=mask).logits
        with adapters_disabled(adapted):
            off = adapted(input_ids=ids, attention_mask=mask).logits
            off_labelled = adapted.simpo_labelled_logps({"input_ids": ids, "attention_mask": mask}, target, 2)
        on = adapted(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(off, expected, atol=1e-6, rtol=0)
    assert (on - expected).abs().max() > 1e-3  # the adapters are back on after the block
    reference = target_sequence_logps(expected, *target, 2)  # the labelled-only head through get_decoder/lm_head
    assert torch.allclose(off_labelled[0], reference.logp_sum, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="peft=lora"), adapters_disabled(base):
        pass


def test_merged_weights_equal_a_float64_hand_computation(llama3_tokenizer):
    adapted = apply_adapters(tiny_policy(llama3_tokenizer), AdapterSettings(r=4, alpha=8))
    randomise_adapters(adapted)
    merged = merged_state_dict(adapted)
    layer = adapted.base_model.model.model.layers[1].mlp.down_proj
    w, a, b = (
        t.double() for t in (layer.base_layer.weight, layer.lora_A["default"].weight, layer.lora_B["default"].weight)
    )
    expected = w + (8 / 4) * b @ a  # (out, in)
    assert torch.allclose(merged["model.layers.1.mlp.down_proj.weight"].double(), expected, atol=1e-6, rtol=0)
    assert not any("lora" in key or "base_layer" in key for key in merged)
    plain = tiny_policy(llama3_tokenizer, seed=5)
    plain.load_state_dict(merged)
    ids = batch(llama3_tokenizer)[0]
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, adapted(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_gradient_checkpointing_gives_the_same_adapter_gradients(llama3_tokenizer):
    grads = []
    for checkpointing in (False, True, "selective"):
        policy = tiny_policy(llama3_tokenizer)
        if checkpointing:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs(checkpointing))
        torch.manual_seed(3)
        adapted = apply_adapters(policy, AdapterSettings(r=4, alpha=8), gradient_checkpointing=checkpointing)
        randomise_adapters(adapted)
        adapted.train()
        ids, mask, _ = batch(llama3_tokenizer)
        adapted(input_ids=ids, attention_mask=mask).logits.float().logsumexp(-1).mean().backward()
        grads.append({n: p.grad.clone() for n, p in adapted.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() == grads[2].keys() and len(grads[0]) == 2 * 2 * 7  # A, B x 2 x 7
    for name, grad in grads[0].items():
        assert grad.abs().max() > 0 and torch.allclose(grads[1][name], grad, atol=1e-6), name
        assert torch.equal(grads[2][name], grad), name  # selective recomputes only element-wise work: bit for bit


@pytest.mark.parametrize(
    ("peft", "name_or_path", "sharded", "key"),
    [
        ({"r": 0}, None, False, "peft.r"),
        ({"alpha": -1}, None, False, "peft.alpha"),
        ({"dropout": 1.0}, None, False, "peft.dropout"),
        ({"target_modules": "q_proj"}, None, False, "peft.target_modules"),
        ({"export": "gguf"}, None, False, "peft.export"),
        ({"export": "adapter"}, None, False, "peft.export=adapter"),
        ({"rank": 8}, None, False, "peft.rank"),
        ({"method": "qlora"}, "some/model", False, "peft=qlora"),
    ],
)
def test_bad_settings_name_their_key(peft, name_or_path, sharded, key):
    if key == "peft=qlora" and torch.cuda.is_available():
        pytest.skip("a GPU is present: peft=qlora is allowed")
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        check_adapter_settings(peft, name_or_path, sharded, accelerator="cpu")


def test_targets_that_match_nothing_or_an_unsupported_architecture_are_named(llama3_tokenizer):
    with pytest.raises(ValueError, match=r"peft\.target_modules: \['qkv'\] match no module.*q_proj"):
        apply_adapters(tiny_policy(llama3_tokenizer), AdapterSettings(target_modules=("q_proj", "qkv")))
    with pytest.raises(ValueError, match=r"peft\.target_modules: \['input_layernorm'\] are not linear"):
        apply_adapters(tiny_policy(llama3_tokenizer), AdapterSettings(target_modules=("input_layernorm",)))
    with pytest.raises(ValueError, match=r"peft\.modules_to_save: \['head'\]"):
        apply_adapters(tiny_policy(llama3_tokenizer), AdapterSettings(modules_to_save=("head",)))
    policy = tiny_policy(llama3_tokenizer)
    policy._no_split_modules = None  # a remote-code architecture that declares no decoder layer
    with pytest.raises(ValueError, match=r"peft: the architecture 'llama' .* not supported .*peft=null"):
        apply_adapters(policy, AdapterSettings())


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["peft.target_modules=[q_proj,lm_head]"], r"peft\.target_modules: lm_head is the output projection.*never "
                                                    r"train.*peft\.modules_to_save=\[lm_head\]"),
        (["peft.target_modules=[lm_head]"], r"peft\.target_modules: lm_head is the output projection"),
        (["peft.r=4096"], r"peft\.r=4096 is above the smaller dimension of k_proj \(64 x 32\).*peft\.r <= 32"),
    ],
)
def test_adapters_that_could_not_train_as_asked_are_refused_by_key(tmp_path, overrides, match):
    """An adapter on the output projection never receives a gradient through the labelled-only head (it trained
    nothing, or failed with a raw autograd error when it was the only target); a rank above a layer's smaller
    dimension adds parameters without capacity (r=4096 on hidden 64 trained 10M adapter parameters)."""
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        prepare(compose_train(run_dir, ["peft=lora", *overrides]))
    assert not run_dir.exists() or not any(run_dir.iterdir())


def test_an_adapter_on_the_output_projection_trains_with_full_logits(llama3_tokenizer):
    settings = AdapterSettings(r=4, alpha=8, target_modules=("q_proj", "lm_head"))
    adapted = apply_adapters(tiny_policy(llama3_tokenizer), settings, chunked_head=False)
    assert any("lm_head.lora_A" in name for name, p in adapted.named_parameters() if p.requires_grad)


def test_a_lora_resume_with_other_adapter_settings_is_refused_by_key_and_changes_nothing(tmp_path):
    """A finished LoRA run resumed with another rank, or without adapters, is refused before anything is written,
    naming the keys and the weights that do not fit (it died with a raw state-dict traceback, and rewrote the
    finished run's status.json to failed)."""
    from simpo.errors import CheckpointError

    run_dir = tmp_path / "run"
    short = ["peft=lora", "peft.r=4", "trainer.max_steps=2", "data.test_split=null", "validate_before_training=false",
             "trainer.enable_progress_bar=false", "callbacks.model_checkpoint.every_n_train_steps=2"]  # fmt: skip
    train(compose_train(run_dir, short))
    before = {str(p): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    resume = ["ckpt_path=last", "trainer.max_steps=3"]
    with pytest.raises(CheckpointError, match=r"peft\.r: 4 in the checkpoint, 8 here; \d+ weight\(s\) of another "
                                              r"shape \(policy\.base_model\.model\.model\.layers\.0\."):  # fmt: skip
        train(compose_train(run_dir, [*short, "peft.r=8", *resume]))
    no_adapters = [o for o in short if not o.startswith("peft")]
    with pytest.raises(CheckpointError, match=r"peft: peft=lora in the checkpoint, no adapters here"):
        train(compose_train(run_dir, [*no_adapters, *resume]))
    assert {str(p): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()} == before


def test_a_bad_peft_setting_fails_before_the_run_directory_is_written(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"peft\.target_modules"):
        prepare(compose_train(run_dir, ["peft=lora", "peft.target_modules=[nope]"]))
    assert not run_dir.exists() or not any(run_dir.iterdir())


# --- a tiny pretrained base trained with LoRA: 4 optimizer steps of 2 micro-batches x 4 pairs ---

RUN = ["data.batch_size=4", "trainer.max_steps=4", "trainer.accumulate_grad_batches=2", "data.test_split=null",
       "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
       "callbacks.model_checkpoint.every_n_train_steps=100", "peft=lora", "peft.r=4", "peft.alpha=8",
       "optimizer.lr=1e-2", "validate_before_training=false"]  # fmt: skip


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, llama3_tokenizer) -> Path:
    """A random tiny Llama saved as a pretrained model with its tokenizer (what peft.export=adapter needs)."""
    path = tmp_path_factory.mktemp("base") / "tiny-llama"
    tiny_policy(llama3_tokenizer, seed=11).save_pretrained(path)
    llama3_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, base_dir) -> dict[str, Path]:
    """A straight run exporting the merged model; the same run stopped by SIGTERM in step 3, resumed, and exporting
    the adapter alone."""
    root = tmp_path_factory.mktemp("lora")
    common = [*RUN, "model=hf", f"model.name_or_path={base_dir}"]
    train(compose_train(root / "straight", common))
    signal = [f"+callbacks.signal._target_={SendSignalAt.__module__}.SendSignalAt", "+callbacks.signal.batch_idx=4"]
    with pytest.raises(SystemExit):
        train(compose_train(root / "resumed", [*common, "peft.export=adapter", *signal]))
    stopped = torch.load(root / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    train(compose_train(root / "resumed", [*common, "peft.export=adapter", "ckpt_path=last"]))
    return {"straight": root / "straight", "resumed": root / "resumed", "stopped": stopped}


@pytest.mark.slow
def test_lora_resumes_exactly_from_an_adapter_only_checkpoint(runs, base_dir):
    assert runs["stopped"]["global_step"] == 3
    state = runs["stopped"]["state_dict"]
    assert state and all(".lora_A." in k or ".lora_B." in k for k in state) and len(state) == 2 * 7 * 2
    expected, got = losses(runs["straight"]), losses(runs["resumed"])
    assert sorted(got) == [0, 1, 2, 3]
    for step in range(4):
        assert got[step] == pytest.approx(expected[step], abs=1e-6, rel=0), step
    assert expected[3] < expected[0]  # it learns
    final = torch.load(runs["resumed"] / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    reference = torch.load(runs["straight"] / "checkpoints" / "last.ckpt", weights_only=True)
    assert final.keys() == reference["state_dict"].keys()
    for name, tensor in reference["state_dict"].items():
        assert torch.allclose(final[name], tensor, atol=1e-6, rtol=0), name
    assert len(reference["optimizer_states"][0]["state"]) == len(final)  # Adam moments of the adapters only
    full_bytes = sum(p.numel() * 4 for p in AutoModelForCausalLM.from_pretrained(base_dir).parameters())
    size = (runs["straight"] / "checkpoints" / "last.ckpt").stat().st_size
    assert size < 0.05 * full_bytes, (size, full_bytes)


@pytest.mark.slow
def test_merged_and_adapter_exports_load_evaluate_alike_and_generate(runs, base_dir):
    merged_dir, adapter_dir = runs["straight"] / "hf", runs["resumed"] / "hf"
    assert (adapter_dir / "adapter_config.json").is_file() and not (adapter_dir / "config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    ids = torch.tensor([[128000, 9906, 1917, 11, 1268, 527, 499]])
    from peft import PeftModel

    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
        with_adapter = PeftModel.from_pretrained(base, adapter_dir)(input_ids=ids).logits
        assert torch.allclose(merged(input_ids=ids).logits, with_adapter, atol=1e-5, rtol=0)
        assert (with_adapter - base_logits).abs().max() > 1e-4  # the adapters learned something
        evaluated = [load_policy(str(d), None).model(input_ids=ids).logits for d in (merged_dir, adapter_dir)]
    assert torch.allclose(evaluated[0], evaluated[1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"only the adapters .*model\.name_or_path=<run dir>/hf"):
        load_policy(None, str(runs["straight"] / "checkpoints" / "last.ckpt"))
    generated = merged.generate(ids, max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, ids.shape[1] + 4)


def step0_margins(run_dir: Path) -> float:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return next(float(r["val/rewards/margins"]) for r in csv.DictReader(handle) if r.get("val/rewards/margins"))


@pytest.mark.slow  # three LoRA DPO runs on a pretrained base (~45 s)
def test_a_named_reference_is_honoured_under_lora_or_refused_naming_the_key(base_dir, llama3_tokenizer, tmp_path,
                                                                            monkeypatch):  # fmt: skip
    """peft=lora with reference.name_or_path=<another model> silently used the adapter-free base (margins exactly 0
    at step 0). Now reference=adapter_off refuses the key; with reference=cached the named weights are the reference,
    giving at step 0 the margins of a live frozen copy of them (reference=model)."""
    monkeypatch.setenv("SIMPO_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "other-model"
    tiny_policy(llama3_tokenizer, seed=12).save_pretrained(other)
    llama3_tokenizer.save_pretrained(other)
    common = ["model=hf", f"model.name_or_path={base_dir}", "peft=lora", "peft.r=4", "loss=dpo", "loss.beta=0.1",
              "trainer.max_steps=2", "trainer.limit_val_batches=2", "trainer.enable_progress_bar=false",
              "callbacks.hf_export=null", f"reference.name_or_path={other}"]  # fmt: skip
    with pytest.raises(ValueError, match=r"reference\.name_or_path=.*other-model is not used by reference=adapter_off"):
        prepare(compose_train(tmp_path / "refused", common))
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())
    train(compose_train(tmp_path / "cached", [*common, "reference=cached"]))
    train(compose_train(tmp_path / "live", [*common, "reference=model"]))
    cached, live = step0_margins(tmp_path / "cached"), step0_margins(tmp_path / "live")
    assert cached == pytest.approx(live, abs=1e-6) and abs(cached) > 1e-4  # the other model, not the base
    recorded = json.loads((tmp_path / "cached" / "status.json").read_text())["reference"]  # which weights served
    assert recorded["mode"] == "cached" and recorded["name_or_path"] == str(other)
    digests = dict(recorded["weights"]["files"])
    assert digests["model.safetensors"] == hashlib.sha256((other / "model.safetensors").read_bytes()).hexdigest()
