"""``sdpa_segments`` (``simpo.core.segment_attention``): SDPA segment by segment over packed rows gives what one SDPA
call over the whole row with the layout's dense mask gives, on every scored position; ``auto`` picks it for packed
layouts off CUDA; an export built with it loads with plain Transformers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from simpo.core.attention_masks import allowed
from simpo.core.segment_attention import SEGMENT_SDPA, segment_sdpa_forward, segment_spans
from simpo.loading.policy_source import load_model_tokenizer, load_policy
from simpo.models.policy import build_policy, resolve_attn_implementation


def test_spans_are_the_runs_of_one_segment_id():
    ids = torch.tensor([[0, 0, 0, 1, 1, 2, -1, -1], [0, 0, 0, 0, 0, 0, 0, 0], [-1, -1, 0, 0, 1, 1, 1, -1]])
    assert segment_spans(ids) == [[(0, 3), (3, 5), (5, 6)], [(0, 8)], [(2, 4), (4, 7)]]


def test_each_segment_alone_equals_the_whole_row_with_its_mask():
    torch.manual_seed(0)
    segments = torch.tensor([[0] * 5 + [1] * 7 + [2] * 3 + [-1] * 2, [0] * 9 + [1] * 8])  # (2, 17)
    branches = torch.tensor([[0, 0, 1, 1, 2, 0, 0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 0], [0] * 17])
    positions = torch.tensor([[0, 1, 2, 3, 2, 0, 1, 2, 3, 4, 3, 4, 0, 1, 1, 0, 0], list(range(9)) + list(range(8))])
    mask = allowed(segments, branches, positions, window=3)  # (2, 1, 17, 17), a sliding window as Mistral's
    module = SimpleNamespace(num_key_value_groups=2, is_causal=True)  # grouped-query attention: 4 heads, 2 KV heads
    q, k, v = torch.randn(2, 4, 17, 8), torch.randn(2, 2, 17, 8), torch.randn(2, 2, 17, 8)
    whole, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.3)
    split, _ = segment_sdpa_forward(module, q, k, v, mask, scaling=0.3, segment_spans=segment_spans(segments))
    assert split.shape == whole.shape == (2, 17, 4, 8)
    inside = segments >= 0  # (2, 17): padding positions are read by no scored token
    torch.testing.assert_close(split[inside], whole[inside], rtol=1e-6, atol=1e-6)
    assert torch.equal(split[~inside], torch.zeros_like(split[~inside]))
    plain, _ = segment_sdpa_forward(module, q, k, v, mask, scaling=0.3)  # no spans (a padded batch): plain SDPA
    assert torch.equal(plain, whole)


def test_auto_takes_it_for_packed_rows_off_cuda():
    pick = lambda layout, model_type="llama": resolve_attn_implementation("auto", torch.float32, model_type, layout)  # noqa: E731
    assert [pick(x) for x in ("padded", "packed", "shared_prompt", "shared_prompt_packed")] == \
        ["sdpa", SEGMENT_SDPA, "sdpa", SEGMENT_SDPA]  # fmt: skip
    assert pick("packed", "gemma2") == "eager"  # no SDPA for Gemma 2's soft cap


def test_an_export_built_with_it_names_no_custom_kernel(tmp_path):
    tokenizer = load_model_tokenizer(None, None)
    architecture = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "num_key_value_heads": 1}  # fmt: skip
    model = build_policy(tokenizer, architecture=architecture, layout="packed")
    assert model.config._attn_implementation == SEGMENT_SDPA
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert SEGMENT_SDPA not in json.dumps(json.loads((tmp_path / "config.json").read_text()))
    assert load_policy(str(tmp_path), None).model.config._attn_implementation == "sdpa"
