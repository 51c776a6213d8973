"""Token-budget micro-batches (data.max_tokens_per_batch): the plan, its share per process, the loss weights, and
the key equality: one optimizer step of weighted token-budget micro-batches has the gradient of one padded batch
holding the same pairs."""

from __future__ import annotations

import pytest
import torch

from data.collate import LAYOUTS, PreferenceCollator
from data.datamodule import PreferenceDataModule
from data.resumable_loader import ResumableDataLoader, TokenBudgetSampler
from data.token_budget import TokenBudget, equal_share, pair_lengths, plan_micro_batches
from simpo.core.global_batch import micro_batch_loss_weight
from simpo.models.policy import build_policy
from simpo.objectives import SimPO
from simpo.training.module import SimPOModule
from tests.conftest import ROOT

BUDGET = 1024
PACK = 256
TINY = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1}  # fmt: skip


def data_module(tokenizer, layout: str, budget: int | None = BUDGET, **kwargs) -> PreferenceDataModule:
    return PreferenceDataModule(tokenizer, str(ROOT / "data" / "tiny_prefs"), max_length=128, max_prompt_length=64,
                                layout=layout, pack_length=PACK, max_tokens_per_batch=budget, **kwargs)  # fmt: skip


@pytest.fixture(scope="module")
def loaded(llama3_tokenizer) -> dict[str, PreferenceDataModule]:
    """The bundled data set's 640 training pairs, planned in every layout (one tokenisation, reused)."""
    modules = {}
    for layout in LAYOUTS:
        module = data_module(llama3_tokenizer, layout, pad_to_multiple_of=8 if layout == "padded" else None)
        module.load("fit")
        modules[layout] = module
    return modules


def test_pair_lengths_are_the_token_counts(loaded):
    pairs = loaded["padded"].splits["train"]
    lengths = pair_lengths(pairs)
    for i in (0, 17, len(pairs) - 1):
        pair = pairs[i]
        prompt = next(t for t, label in enumerate(pair["chosen_labels"]) if label != -100)
        assert lengths[i].tolist() == [len(pair["chosen_input_ids"]), len(pair["rejected_input_ids"]), prompt]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_plan_holds_every_pair_once_and_each_batch_fits_as_laid_out(loaded, layout):
    module = loaded[layout]
    batches, budget = module.micro_batches["train"]
    assert sorted(i for batch in batches for i in batch) == list(range(len(module.splits["train"])))
    pairs = module.splits["train"]
    for batch in batches[:: max(1, len(batches) // 12)]:  # collate a spread of them: the real tensor sizes
        tokens = module.collator([pairs[i] for i in batch])["input_ids"].numel()
        assert tokens == budget.cost(batch) <= BUDGET
    assert sum(len(b) for b in batches) / len(batches) > 2  # a budget of 1024 holds several ~100-token pairs


def test_costs_follow_the_layout(loaded):
    """Padded counts 2 x the longest sequence (rounded to pad_to_multiple_of) x pairs; shared_prompt one row per pair
    with the prompt once; packed rows of at most pack_length."""
    lengths = loaded["padded"].micro_batches["train"][1].lengths
    pairs = [0, 1, 2]
    chosen, rejected, prompt = lengths[pairs].T
    longest = max(chosen.max(), rejected.max())
    assert loaded["padded"].micro_batches["train"][1].cost(pairs) == 2 * 3 * (-(-longest // 8) * 8)
    assert loaded["shared_prompt"].micro_batches["train"][1].cost(pairs) == 3 * max(chosen + rejected - prompt)
    rows, width = loaded["packed"].collator.laid_out_shape([*chosen, *rejected])
    assert width <= PACK and rows * width >= sum(chosen + rejected)


def test_plan_is_deterministic_and_seeded(loaded):
    budget = loaded["packed"].micro_batches["train"][1]
    assert plan_micro_batches(budget, 3) == plan_micro_batches(budget, 3)
    assert plan_micro_batches(budget, 3) != plan_micro_batches(budget, 4)


def test_a_pair_over_the_budget_stops_loading(llama3_tokenizer):
    module = data_module(llama3_tokenizer, "packed", budget=64)
    with pytest.raises(ValueError, match=r"data.max_tokens_per_batch=64 is smaller than pair \d+ alone"):
        module.load("fit")


def test_a_global_batch_size_conflicts_with_a_token_budget(llama3_tokenizer):
    with pytest.raises(ValueError, match=r"data\.global_batch_size=128 fixes .* data\.max_tokens_per_batch=1024"):
        data_module(llama3_tokenizer, "packed", global_batch_size=128)
    with pytest.raises(ValueError, match=r"data\.max_tokens_per_batch must be a positive integer or null"):
        data_module(llama3_tokenizer, "packed", budget=0)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_process_gets_as_many_micro_batches_and_an_epoch_covers_every_pair(loaded, world):
    batches, budget = loaded["packed"].micro_batches["train"]
    accumulate = 4
    samplers = [TokenBudgetSampler(batches, 7, True, accumulate, budget, (rank, world)) for rank in range(world)]
    for epoch in (0, 1):
        schedules = []
        for sampler in samplers:
            sampler.seek(epoch, 0)
            schedules.append(sampler.schedule())
        assert len({len(s) for s in schedules}) == 1 and len(schedules[0]) == len(samplers[0])
        assert sorted(i for s in schedules for batch, _ in s for i in batch) == list(range(640))
        assert all(budget.fits(batch) for s in schedules for batch, _ in s)
        # each optimizer step: a micro-batch of n pairs enters the gradient as w / (A W) x its mean loss, so every
        # pair of the step weighs w / (n A W), which must be 1 / (pairs in the step) for all of them
        for step in range(0, len(schedules[0]), accumulate):
            parts = [(len(b), w) for s in schedules for b, w in s[step : step + accumulate]]
            step_pairs = sum(n for n, _ in parts)
            assert [w / (n * accumulate * world) for n, w in parts] == pytest.approx([1 / step_pairs] * len(parts))
    samplers[0].seek(0, 0)
    first = samplers[0].schedule()
    samplers[0].seek(1, 0)
    assert samplers[0].schedule() != first  # a new order each epoch, the same count


def test_loss_weights_by_hand():
    assert micro_batch_loss_weight(3, 4, 2, 1) == 1.5 and micro_batch_loss_weight(1, 4, 2, 1) == 0.5
    assert micro_batch_loss_weight(4, 16, 2, 2) == 1.0  # equal micro-batches: weight 1
    sampler = TokenBudgetSampler([[0, 1, 2], [3], [4, 5], [6, 7]], seed=0, shuffle=False, accumulate=2)
    assert [w for _, w in sampler.schedule()] == [1.5, 0.5, 1.0, 1.0]


def test_equal_share_splits_the_largest_and_pads_only_single_pairs():
    assert equal_share([[0, 1, 2, 3], [4]], 3) == [[0, 1], [2, 3], [4]]
    assert equal_share([[0], [1], [2]], 2) == [[0], [1], [2], [0]]  # nothing left to split: wrap around


def test_the_loader_resumes_mid_epoch_with_the_same_batches_and_weights(loaded):
    module = loaded["shared_prompt_packed"]
    batches, budget = module.micro_batches["train"]
    data = list(range(640))

    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(data, 1, seed=5, micro_batches=batches, accumulate=3, budget=budget,
                                   collate_fn=lambda rows: {"pairs": rows})  # fmt: skip

    straight = loader()
    epoch = list(straight)
    assert len(epoch) == len(straight) == len(batches)
    iterator = iter(straight)
    seen = [next(iterator) for _ in range(5)]
    state = straight.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    assert seen + list(resumed) == [*seen, *list(iterator)]
    other = ResumableDataLoader(data, 1, seed=5, micro_batches=batches[1:] + batches[:1], budget=budget)
    with pytest.raises(ValueError, match=r"data\.max_tokens_per_batch"):
        other.load_state_dict(state)
    fixed = ResumableDataLoader(data, 4, seed=5)
    with pytest.raises(ValueError, match=r"(without a|another) token budget"):
        fixed.load_state_dict(state)


def step_loss(module: SimPOModule, batch: dict, beta: float = 2.0, gamma: float = 1.0) -> torch.Tensor:
    """The mean over the batch's pairs of the SimPO loss plus 0.5 x the chosen responses' mean NLL, from the
    forward pass's per-response sums (written out here, independent of the objectives package)."""
    chosen, rejected = module(batch)
    margin = chosen.logp_sum / chosen.token_count - rejected.logp_sum / rejected.token_count
    return (-torch.nn.functional.logsigmoid(beta * margin - gamma) - 0.5 * chosen.logp_sum / chosen.token_count).mean()


# (layout, processes): one case in the default suite (about 10 s on a busy 2-core machine), the rest with the slow tests
GRADIENT_CASES = [("packed", 2)] + [
    pytest.param(layout, world, marks=pytest.mark.slow)
    for layout in LAYOUTS
    for world in (1, 2)
    if (layout, world) != ("packed", 2)
]


@pytest.mark.parametrize(("layout", "world"), GRADIENT_CASES)
def test_one_step_of_weighted_micro_batches_has_the_gradient_of_one_padded_batch(loaded, llama3_tokenizer, layout,
                                                                                 world):  # fmt: skip
    """float64: the accumulated, process-averaged gradient of weighted token-budget micro-batches (Lightning divides
    each micro-batch loss by the accumulation; DDP averages over processes) equals the gradient of the mean loss of
    one padded batch of the same pairs."""
    torch.manual_seed(0)
    module = SimPOModule(build_policy(llama3_tokenizer, architecture=TINY, attn_implementation="eager").double(),
                         SimPO(), chunk_size=256)  # fmt: skip
    pairs = loaded[layout].splits["train"]
    lengths = pair_lengths(pairs)
    chosen_ids = [i for i in range(640) if max(lengths[i, :2]) < 60][:7]  # short pairs, to keep the test fast
    budget = TokenBudget(BUDGET, loaded[layout].collator, lengths[chosen_ids])
    budget.max_tokens = int(2.5 * max(budget.cost([i]) for i in range(7)))  # 1 to 3 pairs per micro-batch
    plan = plan_micro_batches(budget, 0)
    accumulate = len(plan) + 1  # one optimizer step, shorter than its window (as an epoch's last step may be)
    per_rank = []
    for rank in range(world):
        sampler = TokenBudgetSampler(plan, 0, True, accumulate, budget, (rank, world))
        assert len(sampler) * world == len(sampler.micro_batches) >= 2 * world
        assert len({len(batch) for batch in sampler.micro_batches}) > 1  # unequal micro-batches: weights other than 1
        module.zero_grad()
        for batch, weight in sampler.schedule():
            collated = loaded[layout].collator([pairs[chosen_ids[i]] for i in batch])
            (step_loss(module, collated) * weight / accumulate).backward()
        per_rank.append({n: p.grad.clone() for n, p in module.named_parameters()})
    module.zero_grad()
    step_loss(module, PreferenceCollator(pad_token_id=0)([pairs[i] for i in chosen_ids])).backward()
    for name, param in module.named_parameters():  # the layouts themselves agree to ~1e-8 in float64
        error = (sum(grads[name] for grads in per_rank) / world - param.grad).norm() / param.grad.norm()
        assert error < 1e-6, f"{name}: relative error {error:.2e}"
