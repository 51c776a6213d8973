"""A seeded, shard-aware DataLoader that Lightning can checkpoint and resume mid-epoch: batches of a fixed number of
pairs (``EpochShuffleSampler``) or micro-batches planned by a token budget (``TokenBudgetSampler``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from data.token_budget import KEY as BUDGET_KEY
from data.token_budget import TokenBudget, equal_share
from simpo.core.global_batch import micro_batch_loss_weight
from simpo.errors import UserError


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochShuffleSampler(Sampler[int]):
    """This rank's share of a permutation drawn from ``(seed, epoch)``, starting at ``start``.

    Every epoch's order depends only on the seed and the epoch number, so a resumed run sees the same
    order. With W processes, the permutation is padded by wrapping around to a multiple of W (as
    ``DistributedSampler`` does, so no row is dropped) and cut into global batches of ``batch_size x W``
    rows; rank r takes the r-th ``batch_size`` rows of each. So the global batches are the same rows
    whatever the number of processes (1 process with batch 2b sees what 2 processes with batch b see).

    Args:
        size: number of rows in the data set.
        seed: base seed of the shuffling.
        shuffle: ``False`` keeps the data set order (still sharded).
        batch_size: rows per process per batch.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, batch_size: int = 1) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.batch_size = batch_size
        self.epoch = 0
        self.start = 0

    def seek(self, epoch: int, batches_done: int) -> None:
        """Start epoch ``epoch`` after its first ``batches_done`` batches."""
        self.epoch, self.start = epoch, batches_done * self.batch_size

    def indices(self) -> list[int]:
        """This rank's whole share of the current epoch."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        rank, world = _rank_and_world()
        padded = order + order[: (-len(order)) % world]
        block = self.batch_size * world
        mine: list[int] = []
        for start in range(0, len(padded), block):
            global_batch = padded[start : start + block]
            share = len(global_batch) // world
            mine += global_batch[rank * share : (rank + 1) * share]
        return mine

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return -(-self.size // _rank_and_world()[1])


class TokenBudgetSampler(Sampler[list[int]]):
    """This rank's micro-batches of a token-budget plan, in an order drawn from ``(seed, epoch)``, with their loss
    weights.

    The plan's micro-batches (``data.token_budget.plan_micro_batches``) are first made a multiple of the number of
    processes W in number (``equal_share``). Each epoch permutes them (every process draws the same permutation) and
    cuts the order into optimizer steps of ``accumulate`` x W micro-batches (the epoch's last step may hold fewer, a
    multiple of W); rank r takes micro-batches r, r + W, ... of each step, so every process runs the same number of
    micro-batches, step after step. A micro-batch's loss weight
    (``simpo.core.global_batch.micro_batch_loss_weight``) makes the step's gradient the mean over the step's pairs,
    on every process and micro-batch.

    Args:
        micro_batches: the plan (lists of pair indices).
        seed: base seed of the epoch orders.
        shuffle: ``False`` keeps the plan's order (validation).
        accumulate: micro-batches per process per optimizer step (``trainer.accumulate_grad_batches``).
        budget: re-checks micro-batches that ``equal_share`` splits (``None``: no check).
        rank_and_world: (this process's rank, processes); ``None``: from ``torch.distributed`` (or (0, 1)).
    """

    def __init__(
        self,
        micro_batches: list[list[int]],
        seed: int,
        shuffle: bool = True,
        accumulate: int = 1,
        budget: TokenBudget | None = None,
        rank_and_world: tuple[int, int] | None = None,
    ) -> None:
        self.rank, self.world = rank_and_world or _rank_and_world()
        self.micro_batches = equal_share(micro_batches, self.world, budget)
        self.seed = seed
        self.shuffle = shuffle
        self.accumulate = accumulate
        self.epoch = 0
        self.start = 0

    def seek(self, epoch: int, batches_done: int) -> None:
        """Start epoch ``epoch`` after this rank's first ``batches_done`` micro-batches."""
        self.epoch, self.start = epoch, batches_done

    def schedule(self) -> list[tuple[list[int], float]]:
        """This rank's whole epoch: (pair indices, loss weight) per micro-batch."""
        count = len(self.micro_batches)
        if self.shuffle:
            order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(count))
        per_step = self.accumulate * self.world
        mine = []
        for first in range(0, count, per_step):
            step = [self.micro_batches[i] for i in order[first : first + per_step]]
            step_pairs = sum(len(batch) for batch in step)
            for batch in step[self.rank :: self.world]:
                mine.append((batch, micro_batch_loss_weight(len(batch), step_pairs, self.accumulate, self.world)))
        return mine

    def loss_weights(self) -> list[float]:
        """The loss weights of the micro-batches ``__iter__`` yields, in order."""
        return [weight for _, weight in self.schedule()[self.start :]]

    def __iter__(self) -> Iterator[list[int]]:
        return iter([batch for batch, _ in self.schedule()[self.start :]])

    def __len__(self) -> int:
        return len(self.micro_batches) // self.world

    def digest(self) -> str:
        """A fingerprint of what a saved position means: the plan, the processes and (with several) the accumulation,
        which decide which micro-batches each process gets."""
        meaning = [self.micro_batches, self.world, self.accumulate if self.world > 1 else None]
        return hashlib.sha256(json.dumps(meaning).encode()).hexdigest()[:16]


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over an ``EpochShuffleSampler`` (``batch_size`` pairs a batch) or, given ``micro_batches``, a
    ``TokenBudgetSampler`` that records how far the current epoch got.

    ``state_dict`` / ``load_state_dict`` make it stateful for Lightning, which stores the state in its
    checkpoints; a resumed run continues the interrupted epoch at the next unseen batch, in the same order.
    ``len()`` stays the full epoch's number of batches, as Lightning expects. Under a token budget, every batch (a
    collator's dict) gets its ``loss_weight``.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        micro_batches: list[list[int]] | None = None,
        accumulate: int = 1,
        budget: TokenBudget | None = None,
        **kwargs: Any,
    ) -> None:
        self.epoch_sampler: EpochShuffleSampler | TokenBudgetSampler
        if micro_batches is None:
            self.epoch_sampler = EpochShuffleSampler(len(dataset), seed, shuffle, batch_size)  # type: ignore[arg-type]
            super().__init__(dataset, batch_size=batch_size, sampler=self.epoch_sampler, **kwargs)
        else:
            self.epoch_sampler = TokenBudgetSampler(micro_batches, seed, shuffle, accumulate, budget)
            super().__init__(dataset, batch_sampler=self.epoch_sampler, **kwargs)
        self._epoch = 0
        self._batches_done = 0
        self._resume_at = 0

    def __iter__(self) -> Iterator[Any]:
        sampler = self.epoch_sampler
        sampler.seek(self._epoch, self._resume_at)
        weights = sampler.loss_weights() if isinstance(sampler, TokenBudgetSampler) else None
        self._batches_done, self._resume_at = self._resume_at, 0
        for position, batch in enumerate(super().__iter__()):
            if weights is not None and isinstance(batch, dict):
                batch["loss_weight"] = weights[position]
            self._batches_done += 1
            yield batch
        self._epoch += 1
        self._batches_done = 0

    def _position(self, epoch: int, batches_done: int) -> tuple[int, int]:
        """``(epoch, batches_done)`` with a finished epoch as the next one's start.

        Lightning knows the epoch's length and never asks for a batch past the last one, so a checkpoint taken
        after an epoch's last batch (the end of a one-epoch run) finds the epoch unfinished with every batch
        done; resumed as such, a longer ``trainer.max_epochs`` would start its next epoch with nothing left.
        """
        if batches_done >= len(self) > 0:
            return epoch + 1, 0
        return epoch, batches_done

    def state_dict(self) -> dict[str, Any]:
        """The epoch in progress, the batches of it already handed out, and what gives those batches their meaning:
        the pairs per global batch, or the token-budget plan's digest."""
        epoch, batches_done = self._position(self._epoch, self._batches_done)
        state: dict[str, Any] = {"epoch": epoch, "batches_done": batches_done, "seed": self.epoch_sampler.seed}
        if isinstance(self.epoch_sampler, TokenBudgetSampler):
            state["token_budget_plan"] = self.epoch_sampler.digest()
        else:
            state["global_batch_rows"] = self.batch_size * _rank_and_world()[1]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at batch ``batches_done`` of epoch ``epoch``.

        Raises:
            ValueError: another seed, or (mid-epoch) another token-budget plan than the checkpoint's.
        """
        if state.get("seed", self.epoch_sampler.seed) != self.epoch_sampler.seed:
            raise UserError(
                f"the checkpoint's data order used seed {state['seed']}, this run seed {self.epoch_sampler.seed}: "
                "resume with the same seed (and data.seed)"
            )
        plan = self.epoch_sampler.digest() if isinstance(self.epoch_sampler, TokenBudgetSampler) else None
        if state.get("batches_done", 0) > 0 and state.get("token_budget_plan") != plan:
            raise UserError(
                f"the checkpoint stopped {state['batches_done']} micro-batches into an epoch planned "
                f"{'by another token budget' if state.get('token_budget_plan') else 'without a token budget'}, and "
                f"this run's plan differs: its saved position would skip or repeat pairs. Resume with the same "
                f"{BUDGET_KEY}, data.layout, data.pack_length, data.pad_to_multiple_of, trainer.devices and (on "
                "several devices) trainer.accumulate_grad_batches"
            )
        self._epoch, self._resume_at = self._position(state["epoch"], state.get("batches_done", 0))
