"""``model.head_backward``: the chunked head's ``store`` mode (d logp / d logits formed in forward) against its
``recompute`` mode and against autograd through the full logits.

Values and gradients (hidden states and head weight, with and without Gemma 2's soft cap, float64 and float32,
a frozen head as under LoRA, and every parameter of a tiny Llama and Gemma 2 through the policy's labelled head)
must be equal; dispatch-mode probes check what each mode costs: ``store`` keeps one (M, V) buffer and runs one
matmul in backward, and keeps nothing vocabulary-sized when the head is frozen or when there is no autograd.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simpo.config.config_checks import ConfigError, check_train_config
from simpo.core.chunked_logprobs import chunked_sequence_logps
from simpo.core.labelled_head import METHOD_NAME, attach_labelled_logps
from simpo.core.logprobs import IGNORE_INDEX, SequenceLogps, target_sequence_logps
from simpo.models.policy import disable_dropout
from tests.conftest import compose_train, padded_batch
from tests.simpo.test_chunked_logprobs import (
    RTOL,
    VOCAB,
    LargestBuffer,
    full_path,
    make_labels,
    rel_err,
    tiny_gemma2,
    tiny_llama,
)

NAMES = ("logp_sum", "logit_sum", "grad_hidden", "grad_weight")


def head_and_hidden(dtype: torch.dtype, frozen_head: bool = False) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """A (V=53, H=16) head with logits of several units, (6, 13, 16) hidden states and their (6, 13) labels."""
    torch.manual_seed(0)
    _, labels, _ = make_labels(6, 13, VOCAB, seed=1)
    head = nn.Linear(16, VOCAB, bias=False, dtype=dtype)
    nn.init.normal_(head.weight, std=1.0)
    head.weight.requires_grad_(not frozen_head)
    hidden = torch.randn(6, 13, 16, dtype=dtype, requires_grad=True)
    return head, hidden, labels


def values_and_grads(fn, head: nn.Linear, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Log-prob sums, logit sums and the gradients of a downstream loss weighing every row differently."""
    hidden.grad, head.weight.grad = None, None
    stats = fn()
    row_weights = torch.linspace(-1.0, 2.0, hidden.shape[0], dtype=hidden.dtype)
    (stats.logp_sum * row_weights).sum().backward()
    grad_w = head.weight.grad.clone() if head.weight.requires_grad else None
    return stats.logp_sum.detach(), stats.logit_sum, hidden.grad.clone(), grad_w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cap", [None, 0.3])
@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_store_equals_recompute_and_full_logits(dtype, cap, chunk_size):
    head, hidden, labels = head_and_hidden(dtype)
    full = values_and_grads(lambda: full_path(hidden, labels, head, cap), head, hidden)
    modes = {
        mode: values_and_grads(
            lambda m=mode: chunked_sequence_logps(hidden, labels, head, chunk_size, cap, m), head, hidden
        )
        for mode in ("recompute", "store")
    }
    for mode, got in modes.items():
        for name, value, expected in zip(NAMES, got, full, strict=True):
            assert rel_err(value, expected) < RTOL[dtype], (mode, name)
            assert value.dtype == expected.dtype, (mode, name)
    store, recompute = modes["store"], modes["recompute"]
    assert torch.equal(store[0], recompute[0]) or rel_err(store[0], recompute[0]) < RTOL[dtype]


@pytest.mark.parametrize("cap", [None, 0.3])
def test_store_with_a_frozen_head_gives_the_hidden_gradient_and_keeps_nothing_vocabulary_sized(cap):
    """Under LoRA the head (or the tied embedding) is frozen: only ``D @ weight`` (M, H) is kept."""
    head, hidden, labels = head_and_hidden(torch.float64, frozen_head=True)
    _, _, ref_gh, _ = values_and_grads(lambda: full_path(hidden, labels, head, cap), head, hidden)
    chunk_size = 4
    with LargestBuffer() as probe:
        _, _, grad_hidden, grad_w = values_and_grads(
            lambda: chunked_sequence_logps(hidden, labels, head, chunk_size, cap, "store"), head, hidden
        )
    assert grad_w is None and head.weight.grad is None
    assert rel_err(grad_hidden, ref_gh) < RTOL[torch.float64]
    assert probe.largest <= max(chunk_size * VOCAB, hidden.numel())  # (6, 13, 16) > (4, 53): no (M, V)


def test_store_keeps_one_token_by_vocabulary_buffer_and_runs_one_matmul_in_backward():
    head, hidden, labels = head_and_hidden(torch.float32)
    m = int((labels[:, 1:] != IGNORE_INDEX).sum())
    chunk_size = 8
    stats = chunked_sequence_logps(hidden, labels, head, chunk_size, None, "store")
    with LargestBuffer() as backward_probe:
        stats.logp_sum.sum().backward()
    matmuls = [op for op in backward_probe.ops if op in ("aten.mm", "aten.addmm", "aten.addmm_", "aten.bmm")]
    assert matmuls == ["aten.mm"], backward_probe.ops  # D.T @ (g * hidden); the logits are not recomputed
    with LargestBuffer() as forward_probe:
        chunked_sequence_logps(hidden, labels, head, chunk_size, None, "store")
    assert forward_probe.largest == m * VOCAB > chunk_size * VOCAB  # the stored D
    with LargestBuffer() as recompute_probe:
        chunked_sequence_logps(hidden, labels, head, chunk_size, None, "recompute").logp_sum.sum().backward()
    assert recompute_probe.largest <= max(chunk_size * VOCAB, hidden.numel()) < m * VOCAB


def test_store_without_autograd_keeps_nothing():
    """Validation runs under no_grad: the store mode then runs the plain forward."""
    head, hidden, labels = head_and_hidden(torch.float32)
    with torch.no_grad(), LargestBuffer() as probe:
        got = chunked_sequence_logps(hidden, labels, head, 8, None, "store")
    ref = chunked_sequence_logps(hidden.detach(), labels, head, 8, None, "recompute")
    assert probe.largest <= max(8 * VOCAB, hidden.numel())
    assert torch.equal(got.logp_sum, ref.logp_sum.detach())


def test_store_in_bfloat16_matches_recompute():
    """The stored D is in the weight's dtype, the dtype recompute casts it to before its matmuls."""
    torch.manual_seed(0)
    _, labels, _ = make_labels(4, 11, VOCAB, seed=2)
    head = nn.Linear(8, VOCAB, bias=False).to(torch.bfloat16)
    hidden = torch.randn(4, 11, 8, dtype=torch.bfloat16, requires_grad=True)
    results = {}
    for mode in ("recompute", "store"):
        results[mode] = values_and_grads(
            lambda m=mode: chunked_sequence_logps(hidden, labels, head, 5, 0.5, m), head, hidden
        )
    (logp_r, _, gh_r, gw_r), (logp_s, _, gh_s, gw_s) = results["recompute"], results["store"]
    assert logp_s.dtype == torch.float32 and gh_s.dtype == gw_s.dtype == torch.bfloat16
    torch.testing.assert_close(logp_s, logp_r, rtol=1e-6, atol=1e-6)
    assert rel_err(gh_s.float(), gh_r.float()) < 1e-2 and rel_err(gw_s.float(), gw_r.float()) < 1e-2


def policy_loss_and_grads(policy: nn.Module, batch: dict, head_backward: str | None) -> tuple:
    """A SimPO-shaped loss (length-normalised margin and an SFT term) of one padded batch, its per-sequence
    statistics and every parameter's gradient; ``head_backward=None`` is the full-logits path."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    targets = (batch["target_index"], batch["target_ids"], batch["target_sequence"])
    n = 2 * batch["num_pairs"]
    policy.zero_grad(set_to_none=True)
    if head_backward is None:
        stats = target_sequence_logps(policy(**inputs).logits, *targets, n)
    else:
        attach_labelled_logps(policy, 5, head_backward)
        stats = SequenceLogps(*getattr(policy, METHOD_NAME)(inputs, targets, n))
    chosen, rejected = stats.split(n // 2)
    margin = 2.0 * (chosen.logp_mean - rejected.logp_mean) - 1.0
    loss = -torch.nn.functional.logsigmoid(margin).mean() - 0.5 * chosen.logp_mean.mean()
    loss.backward()
    values = torch.stack([loss.detach(), *stats.logp_sum.detach(), *stats.logit_sum])
    grads = {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}
    return values, grads


@pytest.mark.parametrize("build", [tiny_llama, tiny_gemma2], ids=["llama", "gemma2"])
def test_whole_model_loss_and_gradients_equal_full_logits(build):
    torch.manual_seed(0)
    policy = build(torch.float64)
    disable_dropout(policy)
    ids, labels, mask = make_labels(6, 12, VOCAB, seed=4)  # 3 pairs
    batch = padded_batch(ids, mask, labels)
    ref_values, ref_grads = policy_loss_and_grads(policy, batch, None)
    assert len(ref_grads) == len(list(policy.parameters()))
    for mode in ("recompute", "store"):
        values, grads = policy_loss_and_grads(policy, batch, mode)
        assert rel_err(values, ref_values) < RTOL[torch.float64], mode
        assert grads.keys() == ref_grads.keys()
        for name, grad in grads.items():
            assert rel_err(grad, ref_grads[name]) < RTOL[torch.float64], (mode, name)


def test_unknown_mode_names_the_key():
    head, hidden, labels = head_and_hidden(torch.float32)
    with pytest.raises(ValueError, match=r"model\.head_backward must be one of"):
        chunked_sequence_logps(hidden, labels, head, 8, None, "stash")


@pytest.mark.parametrize("model", ["tiny_llama", "hf"])
def test_config_default_is_auto(tmp_path, model):
    overrides = [f"model={model}"] + (["model.name_or_path=x"] if model == "hf" else [])
    assert compose_train(tmp_path, overrides).model.head_backward == "auto"


def backward_name(head: nn.Linear, hidden: torch.Tensor, labels: torch.Tensor, chunk_size: int, mode: str) -> str:
    """The names of every autograd node behind the log-prob sums (one of them is the head's function)."""
    stack, names = [chunked_sequence_logps(hidden, labels, head, chunk_size, None, mode).logp_sum.grad_fn], []
    while stack:
        node = stack.pop()
        if node is not None:
            names.append(node.name())
            stack.extend(next_node for next_node, _ in node.next_functions)
    return " ".join(names)


@pytest.mark.parametrize(
    ("chunk_size", "frozen", "expected"),
    [
        (100, False, "StoredGradLabelledLogpsBackward"),  # 37 scored tokens <= 2 x 100
        (19, False, "StoredGradLabelledLogpsBackward"),  # 37 <= 2 x 19
        (18, False, "ChunkedLabelledLogpsBackward"),  # 37 > 2 x 18: recompute
        (1, True, "StoredGradLabelledLogpsBackward"),  # a frozen head keeps no (M, V) buffer: always store
    ],
)
def test_auto_stores_up_to_two_chunks_of_scored_tokens_or_a_frozen_head(chunk_size, frozen, expected):
    head, hidden, labels = head_and_hidden(torch.float64, frozen_head=frozen)
    assert int((labels[:, 1:] != IGNORE_INDEX).sum()) == 37  # M: the positions that predict a label
    assert expected in backward_name(head, hidden, labels, chunk_size, "auto")
    for mode, name in (("store", "StoredGrad"), ("recompute", "ChunkedLabelled")):  # explicit modes are kept
        assert name in backward_name(head, hidden, labels, chunk_size, mode)


@pytest.mark.parametrize("chunk_size", [5, 100])
def test_auto_equals_full_logits_on_either_side_of_the_threshold(chunk_size):
    head, hidden, labels = head_and_hidden(torch.float64)
    auto = values_and_grads(
        lambda: chunked_sequence_logps(hidden, labels, head, chunk_size, None, "auto"), head, hidden
    )
    full = values_and_grads(lambda: full_path(hidden, labels, head, None), head, hidden)
    for name, a, b in zip(NAMES, auto, full, strict=True):
        assert rel_err(a, b) < 1e-10, name


def test_train_config_check_names_the_key_before_anything_is_built(tmp_path):
    cfg = compose_train(tmp_path, ["model.head_backward=stash", "model.chunk_size=null"])
    with pytest.raises(ConfigError, match=r"model\.head_backward must be one of \['auto', 'recompute', 'store'\]"):
        check_train_config(cfg)
