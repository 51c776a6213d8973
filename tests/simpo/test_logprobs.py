"""Per-token and per-sequence log-probs against a naive float64 loop reference.

The library computes in float32 (``.float()`` on the logits, documented as float32 output), so values
are compared against the float64 reference at float32 tolerances; the two library paths (full logits
and labelled-positions-only projection) are compared with each other at tight float32 tolerances.
"""

from __future__ import annotations

import math

import pytest
import torch

from simpo.core.logprobs import (
    IGNORE_INDEX,
    SequenceLogps,
    labelled_positions,
    sequence_logps,
)

# float32 results against a float64 reference of O(1..10) magnitudes.
F32 = {"rtol": 1e-5, "atol": 1e-5}


def reference(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Naive loop: position t of row n predicts labels[n, t + 1]; float64 throughout."""
    logits = logits.detach().to(torch.float64)
    n_rows, t_len, _ = logits.shape
    token = torch.zeros(n_rows, t_len - 1, dtype=torch.float64)
    mask = torch.zeros(n_rows, t_len - 1, dtype=torch.bool)
    sums, counts, logit_sums = [], [], []
    for n in range(n_rows):
        s, c, ls = 0.0, 0, 0.0
        for t in range(t_len - 1):
            target = int(labels[n, t + 1])
            if target == IGNORE_INDEX:
                continue
            row = [float(v) for v in logits[n, t]]
            m = max(row)
            lse = m + math.log(sum(math.exp(v - m) for v in row))
            lp = row[target] - lse
            token[n, t] = lp
            mask[n, t] = True
            s += lp
            c += 1
            ls += sum(row) / len(row)
        sums.append(s)
        counts.append(c)
        logit_sums.append(ls)
    sums_t = torch.tensor(sums, dtype=torch.float64)
    counts_t = torch.tensor(counts, dtype=torch.float64)
    return {
        "token": token,
        "mask": mask,
        "sum": sums_t,
        "count": counts_t,
        "mean": sums_t / counts_t,
        "logit_sum": torch.tensor(logit_sums, dtype=torch.float64),
    }


def make_labels(lengths: list[int], prompt_lengths: list[int], t_len: int, vocab: int, seed: int) -> torch.Tensor:
    """Right-padded rows: ``prompt_lengths[i]`` masked prompt tokens, then response, then padding."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((len(lengths), t_len), IGNORE_INDEX, dtype=torch.long)
    for i, (length, p_len) in enumerate(zip(lengths, prompt_lengths, strict=True)):
        labels[i, p_len:length] = torch.randint(0, vocab, (length - p_len,), generator=g)
    return labels


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Four rows of length 9 over a vocab of 11: prompts masked, right padding, logits at scale ~3."""
    vocab, t_len = 11, 9
    labels = make_labels([9, 7, 5, 8], [3, 2, 5, 1], t_len, vocab, seed=0)  # row 2: nothing labelled
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, t_len, vocab, generator=g, dtype=torch.float64) * 3.0
    return logits, labels


def test_sequence_logps_matches_reference(batch):
    logits, labels = batch
    ref = reference(logits, labels)
    seq = sequence_logps(logits, labels)
    assert seq.logp_sum.shape == seq.token_count.shape == seq.logit_sum.shape == (4,)
    torch.testing.assert_close(seq.logp_sum.double(), ref["sum"], **F32)
    torch.testing.assert_close(seq.token_count.double(), ref["count"], rtol=0, atol=0)
    torch.testing.assert_close(seq.logit_sum.double(), ref["logit_sum"], **F32)
    # Row 2 has no labelled token: sum 0, count 0 (its mean is 0/0 and must be filtered upstream).
    assert seq.logp_sum[2].item() == 0.0
    assert seq.token_count[2].item() == 0.0
    mean = seq.logp_mean
    keep = ref["count"] > 0
    torch.testing.assert_close(mean[keep].double(), ref["mean"][keep], **F32)


def test_logp_mean_and_split_hand_values():
    seq = SequenceLogps(
        logp_sum=torch.tensor([-6.0, -3.0, -10.0, -1.0]),
        token_count=torch.tensor([3.0, 1.0, 4.0, 2.0]),
        logit_sum=torch.tensor([1.0, 2.0, 3.0, 4.0]),
    )
    assert seq.logp_mean.tolist() == [-2.0, -3.0, -2.5, -0.5]
    first, rest = seq.split(2)
    assert first.logp_sum.tolist() == [-6.0, -3.0]
    assert first.token_count.tolist() == [3.0, 1.0]
    assert first.logit_sum.tolist() == [1.0, 2.0]
    assert rest.logp_sum.tolist() == [-10.0, -1.0]
    assert rest.token_count.tolist() == [4.0, 2.0]
    assert rest.logit_sum.tolist() == [3.0, 4.0]
    assert rest.logp_mean.tolist() == [-2.5, -0.5]


def test_split_of_concatenated_batch(batch):
    """The [chosen; rejected] layout: splitting the 2B-row result equals computing each half alone."""
    logits, labels = batch
    seq = sequence_logps(logits, labels)
    first, rest = seq.split(2)
    alone_first = sequence_logps(logits[:2], labels[:2])
    alone_rest = sequence_logps(logits[2:], labels[2:])
    for a, b in ((first, alone_first), (rest, alone_rest)):
        torch.testing.assert_close(a.logp_sum, b.logp_sum)
        torch.testing.assert_close(a.token_count, b.token_count)
        torch.testing.assert_close(a.logit_sum, b.logit_sum)


def test_shift_hand_values():
    """Label at position 0 never counts; the logit at the last position never counts."""
    # Vocab of 3: log-softmax of each row is easy to write down.
    logits = torch.tensor(
        [
            [
                [0.0, 0.0, 0.0],  # t=0 predicts labels[1] = 2 -> log(1/3)
                [math.log(2.0), 0.0, math.log(1.0)],  # t=1 predicts labels[2] = 0 -> log(2/4)
                [0.0, 0.0, 0.0],  # t=2 predicts labels[3] (masked) -> ignored
                [100.0, -100.0, 50.0],  # last position: predicts nothing, never counts
            ]
        ],
        dtype=torch.float64,
    )
    labels = torch.tensor([[1, 2, 0, IGNORE_INDEX]])
    seq = sequence_logps(logits, labels)
    assert seq.token_count.tolist() == [2.0]
    assert seq.logp_sum.item() == pytest.approx(math.log(1 / 3) + math.log(0.5), abs=1e-6)
    # Vocab-mean logits: t=0 -> 0, t=1 -> log(2)/3.
    assert seq.logit_sum.item() == pytest.approx(math.log(2.0) / 3, abs=1e-6)

    # Changing the label at position 0 and the logits at the last position changes nothing.
    logits2 = logits.clone()
    logits2[0, -1] = torch.tensor([-7.0, 3.0, 9.0])
    labels2 = labels.clone()
    labels2[0, 0] = IGNORE_INDEX
    seq2 = sequence_logps(logits2, labels2)
    assert seq2.logp_sum.item() == seq.logp_sum.item()
    assert seq2.token_count.item() == seq.token_count.item()
    assert seq2.logit_sum.item() == seq.logit_sum.item()
    # ...and when the last token is labelled it is scored by the second-to-last logit, not the last one.
    labels3 = torch.tensor([[1, 2, 0, 1]])
    seq3 = sequence_logps(logits2, labels3)
    assert seq3.token_count.item() == 3.0
    assert seq3.logp_sum.item() == pytest.approx(math.log(1 / 3) + math.log(0.5) + math.log(1 / 3), abs=1e-6)


def test_prompt_masking_changes_counts(batch):
    """Unmasking a prompt token adds exactly its term: the mask really gates the sums."""
    logits, labels = batch
    base = sequence_logps(logits, labels)
    labels2 = labels.clone()
    labels2[0, 2] = 4  # row 0: prompt length 3 -> now position 1 predicts token id 4
    more = sequence_logps(logits, labels2)
    extra = torch.log_softmax(logits[0, 1].double(), -1)[4].item()
    assert more.token_count[0].item() == base.token_count[0].item() + 1
    assert more.logp_sum[0].item() == pytest.approx(base.logp_sum[0].item() + extra, abs=1e-5)
    torch.testing.assert_close(more.logp_sum[1:], base.logp_sum[1:], rtol=0, atol=0)


def test_float32_and_bfloat16_inputs_give_float32(batch):
    logits, labels = batch
    ref = reference(logits.float(), labels)
    seq = sequence_logps(logits.float(), labels)
    assert seq.logp_sum.dtype == torch.float32
    torch.testing.assert_close(seq.logp_sum.double(), ref["sum"], **F32)
    bf = logits.bfloat16()
    ref_bf = reference(bf, labels)
    seq_bf = sequence_logps(bf, labels)
    assert seq_bf.logp_sum.dtype == torch.float32  # upcast before log-softmax
    torch.testing.assert_close(seq_bf.logp_sum.double(), ref_bf["sum"], **F32)


def test_labelled_positions(batch):
    _, labels = batch
    rows, positions, targets = labelled_positions(labels)
    expected = [(n, t, int(labels[n, t + 1])) for n in range(4) for t in range(8) if labels[n, t + 1] != IGNORE_INDEX]
    assert len(expected) == 18
    assert rows.shape == positions.shape == targets.shape == (18,)
    assert list(zip(rows.tolist(), positions.tolist(), targets.tolist(), strict=True)) == expected


def test_labelled_positions_hand_values():
    labels = torch.tensor([[5, IGNORE_INDEX, 7, 8], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 3]])
    rows, positions, targets = labelled_positions(labels)
    assert rows.tolist() == [0, 0, 1]
    assert positions.tolist() == [1, 2, 2]
    assert targets.tolist() == [7, 8, 3]


def _head_and_hidden(n: int, t_len: int, hidden_size: int, vocab: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(hidden_size, vocab, bias=False).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, hidden_size, generator=g, dtype=torch.float64))
    hidden = torch.randn(n, t_len, hidden_size, generator=g, dtype=torch.float64)
    return head, hidden


def _full_logits(hidden: torch.Tensor, head: torch.nn.Module, cap: float | None) -> torch.Tensor:
    logits = head(hidden)
    if cap is not None:
        logits = cap * torch.tanh(logits / cap)
    return logits
