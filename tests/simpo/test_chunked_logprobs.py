"""The chunked labelled-only path (``loss.chunk_size``) against the full-logits reference path.

Values and gradients (w.r.t. the hidden states, the head weight, and every parameter of a tiny Llama and a
tiny Gemma 2 through ``SimPOModule`` + the SimPO objective) must equal the full-logits path to 1e-5 relative in
float32 and 1e-10 in float64, for chunk sizes of 1, one that does not divide M and one larger than M, with
prompt masking and padding. A dispatch-mode probe checks that no buffer larger than (chunk_size, V) exists.
"""

from __future__ import annotations

import weakref

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

from simpo.core import chunked_logprobs
from simpo.core.chunked_logprobs import CHUNK_BUFFER_BYTES, chunk_rows, chunked_sequence_logps
from simpo.core.logprobs import IGNORE_INDEX, SequenceLogps, sequence_logps
from simpo.models.policy import disable_dropout
from simpo.objectives import SimPO
from simpo.training.module import SimPOModule
from tests.conftest import padded_batch

RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}
VOCAB = 53


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Norm-relative error ||actual - expected|| / ||expected||."""
    actual, expected = actual.detach(), expected.detach()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


def make_labels(n: int, t_len: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``labels`` (n, t_len): right padding, prompts of 2..5 masked tokens, rows of
    different lengths (one of full length)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, t_len), generator=g)
    labels = torch.full((n, t_len), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(n, t_len, dtype=torch.long)
    for row in range(n):
        length = t_len if row == 0 else int(torch.randint(t_len // 2 + 3, t_len + 1, (), generator=g))
        prompt = int(torch.randint(2, 6, (), generator=g))
        labels[row, prompt:length] = ids[row, prompt:length]
        mask[row, :length] = 1
    return ids, labels, mask


def full_path(hidden: torch.Tensor, labels: torch.Tensor, head: nn.Linear, cap: float | None) -> SequenceLogps:
    logits = head(hidden).to(torch.promote_types(hidden.dtype, torch.float32))  # the cap in float32 too
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return sequence_logps(logits, labels)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cap", [None, 0.3])
@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_values_and_gradients_equal_full_logits(dtype, cap, chunk_size):
    torch.manual_seed(0)
    n, t_len, hidden_size = 6, 13, 16
    _, labels, _ = make_labels(n, t_len, VOCAB, seed=1)
    m = int((labels[:, 1:] != IGNORE_INDEX).sum())
    assert m % 7 != 0 and m < 4096
    head = nn.Linear(hidden_size, VOCAB, bias=False, dtype=dtype)
    nn.init.normal_(head.weight, std=1.0)
    hidden = torch.randn(n, t_len, hidden_size, dtype=dtype, requires_grad=True)
    row_weights = torch.randn(n, dtype=dtype)  # a downstream loss that weighs every row differently

    results = []
    for fn in (
        lambda: full_path(hidden, labels, head, cap),
        lambda: chunked_sequence_logps(hidden, labels, head, chunk_size, cap),
    ):
        hidden.grad, head.weight.grad = None, None
        stats = fn()
        (stats.logp_sum * row_weights).sum().backward()
        results.append((stats, hidden.grad.clone(), head.weight.grad.clone()))
    (ref, ref_gh, ref_gw), (got, gh, gw) = results
    tol = RTOL[dtype]
    assert rel_err(got.logp_sum, ref.logp_sum) < tol
    assert rel_err(got.logit_sum, ref.logit_sum) < tol
    assert torch.equal(got.token_count, ref.token_count)
    assert rel_err(gh, ref_gh) < tol and rel_err(gw, ref_gw) < tol
    assert not got.logit_sum.requires_grad and not got.token_count.requires_grad
    assert got.logp_sum.dtype == dtype and gh.dtype == dtype and gw.dtype == dtype


def test_bfloat16_gives_float32_values_and_bfloat16_gradients():
    torch.manual_seed(0)
    _, labels, _ = make_labels(4, 11, VOCAB, seed=2)
    head = nn.Linear(8, VOCAB, bias=False).to(torch.bfloat16)
    hidden = torch.randn(4, 11, 8, dtype=torch.bfloat16, requires_grad=True)
    ref = full_path(hidden.detach(), labels, head, 0.5)
    got = chunked_sequence_logps(hidden, labels, head, 5, 0.5)
    assert got.logp_sum.dtype == torch.float32
    torch.testing.assert_close(got.logp_sum.detach(), ref.logp_sum, rtol=1e-5, atol=1e-5)
    got.logp_sum.sum().backward()
    assert hidden.grad.dtype == torch.bfloat16 and head.weight.grad.dtype == torch.bfloat16


def test_biased_head_is_refused():
    _, labels, _ = make_labels(2, 6, VOCAB, seed=3)
    with pytest.raises(ValueError, match="bias-free"):
        chunked_sequence_logps(torch.randn(2, 6, 4), labels, nn.Linear(4, VOCAB), 4)


def tiny_llama(dtype: torch.dtype) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    return LlamaForCausalLM(config).to(dtype)


def tiny_gemma2(dtype: torch.dtype) -> Gemma2ForCausalLM:
    config = Gemma2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, final_logit_softcapping=0.3,
                          attn_implementation="eager")  # fmt: skip
    model = Gemma2ForCausalLM(config).to(dtype)
    with torch.no_grad():  # logits of several units, so the cap of 0.3 bends nearly all of them
        model.lm_head.weight.mul_(30.0)  # tied with the embedding
    return model


def module_loss_and_grads(policy: nn.Module, chunk_size: int | None, batch: dict) -> tuple[torch.Tensor, dict]:
    module = SimPOModule(policy, SimPO(beta=2.0, gamma_beta_ratio=0.5, sft_weight=0.5), chunk_size=chunk_size)
    policy.zero_grad(set_to_none=True)
    pair, chosen, rejected = module.pair_logps(batch)
    out = module.loss_fn(pair)
    out.loss.backward()
    stats = torch.stack([chosen.logit_sum, rejected.logit_sum, chosen.token_count, rejected.token_count])
    grads = {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}
    return torch.stack([out.loss.detach(), out.metrics["sft_loss"]]), stats, grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("build", [tiny_llama, tiny_gemma2], ids=["llama", "gemma2"])
def test_whole_model_loss_and_gradients_equal_full_logits(build, dtype):
    torch.manual_seed(0)
    policy = build(dtype)
    disable_dropout(policy)
    ids, labels, mask = make_labels(6, 12, VOCAB, seed=4)  # 3 pairs
    batch = padded_batch(ids, mask, labels)
    ref_loss, ref_stats, ref_grads = module_loss_and_grads(policy, None, batch)
    assert len(ref_grads) == len(list(policy.parameters()))
    m = int((labels[:, 1:] != IGNORE_INDEX).sum())
    for chunk_size in (1, 5, 10_000):
        assert chunk_size > m or m % chunk_size or chunk_size == 1
        loss, stats, grads = module_loss_and_grads(policy, chunk_size, batch)
        assert rel_err(loss, ref_loss) < RTOL[dtype], chunk_size
        assert rel_err(stats, ref_stats) < RTOL[dtype], chunk_size
        assert grads.keys() == ref_grads.keys()
        for name, grad in grads.items():
            assert rel_err(grad, ref_grads[name]) < RTOL[dtype], (chunk_size, name)


def test_gemma2_soft_cap_matters_at_this_scale():
    """The cap of 0.3 changes the loss a lot, so the equality above really tests it."""
    torch.manual_seed(0)
    policy = tiny_gemma2(torch.float64)
    ids, labels, mask = make_labels(6, 12, VOCAB, seed=4)
    batch = padded_batch(ids, mask, labels)
    capped, _, _ = module_loss_and_grads(policy, 4, batch)
    policy.config.final_logit_softcapping = None
    uncapped, _, _ = module_loss_and_grads(policy, 4, batch)
    assert rel_err(uncapped, capped) > 1e-2


class LargestBuffer(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator returns (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append(str(func.overloadpacket))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


@pytest.mark.parametrize("chunked", [True, False])
def test_largest_vocabulary_buffer_is_chunk_size_by_vocab(chunked):
    """The probe sees (M, V) buffers in the full path, and nothing above (chunk_size, V) in the chunked one,
    however many tokens the batch holds."""
    vocab, hidden_size, chunk_size = 1000, 8, 16
    head = nn.Linear(hidden_size, vocab, bias=False)
    _, labels, _ = make_labels(8, 40, vocab, seed=5)
    hidden = torch.randn(8, 40, hidden_size, requires_grad=True)
    m = int((labels[:, 1:] != IGNORE_INDEX).sum())
    assert m > 10 * chunk_size
    with LargestBuffer() as probe:
        if chunked:
            stats = chunked_sequence_logps(hidden, labels, head, chunk_size)
        else:
            stats = full_path(hidden, labels, head, None)
        stats.logp_sum.sum().backward()
    assert head.weight.grad is not None and hidden.grad is not None
    if chunked:  # the probe saw backward too: per chunk one matmul forward, two (+ one addmm_) backward
        assert probe.ops.count("aten.mm") >= 3 * (m // chunk_size) and "aten.addmm_" in probe.ops
        assert probe.largest <= chunk_size * vocab
    else:
        assert probe.largest >= m * vocab


class LiveVocabularyBuffers(TorchDispatchMode):
    """Records the most (rows, V)-or-larger tensors alive at once among those the operators return."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold, self.live, self.most = threshold, set(), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.numel() >= self.threshold:
                key = tensor.untyped_storage().data_ptr()
                if key not in self.live:
                    self.live.add(key)
                    weakref.finalize(tensor, self.live.discard, key)
                self.most = max(self.most, len(self.live))
        return out


@pytest.mark.parametrize(("chunk_size", "vocab", "rows"), [(1024, 32_000, 1024), (1024, 128_256, 523),
                                                           (64, 128_256, 64), (1024, 2**30, 1)])  # fmt: skip
def test_chunk_rows_bound_the_buffer_by_bytes(chunk_size, vocab, rows):
    assert chunk_rows(chunk_size, vocab) == rows
    assert rows * vocab * 4 <= CHUNK_BUFFER_BYTES or rows == 1


@pytest.mark.parametrize("mode", ["recompute", "store"])
def test_a_byte_bound_smaller_than_chunk_size_sets_the_rows_and_one_buffer_lives_at_a_time(monkeypatch, mode):
    """With a byte bound of 16 rows of the vocabulary and chunk_size 1000, no buffer exceeds (16, V), at most
    one vocabulary-sized buffer is alive at a time in forward, and the values
    and gradients still equal the full logits in float64."""
    vocab, hidden_size, rows = 1000, 8, 16
    monkeypatch.setattr(chunked_logprobs, "CHUNK_BUFFER_BYTES", rows * vocab * 4)
    head = nn.Linear(hidden_size, vocab, bias=False).double()
    _, labels, _ = make_labels(8, 40, vocab, seed=5)
    hidden = torch.randn(8, 40, hidden_size, dtype=torch.float64, requires_grad=True)
    m = int((labels[:, 1:] != IGNORE_INDEX).sum())
    with LargestBuffer() as largest:
        stats = chunked_sequence_logps(hidden, labels, head, 1000, None, mode)
        assert largest.largest <= (m if mode == "store" else rows) * vocab  # store: its (M, V) factor
    with LiveVocabularyBuffers(rows * vocab) as live:
        chunked_sequence_logps(hidden, labels, head, 1000, None, mode)
    assert live.most == 1  # store forms each chunk's logits inside its (M, V) factor's rows
    with LargestBuffer() as probe:
        stats.logp_sum.sum().backward()
    assert probe.largest <= (m if mode == "store" else rows) * vocab  # recompute: (16, V) chunks only
    grads = (head.weight.grad.clone(), hidden.grad.clone())
    head.weight.grad = hidden.grad = None
    expected = full_path(hidden, labels, head, None)
    expected.logp_sum.sum().backward()
    assert rel_err(stats.logp_sum, expected.logp_sum) < 1e-12
    assert rel_err(grads[0], head.weight.grad) < 1e-10 and rel_err(grads[1], hidden.grad) < 1e-10
