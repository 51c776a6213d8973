"""A seeded, shard-aware DataLoader that Lightning can checkpoint and resume mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler


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


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over an ``EpochShuffleSampler`` that records how far the current epoch got.

    ``state_dict`` / ``load_state_dict`` make it stateful for Lightning, which stores the state in its
    checkpoints; a resumed run continues the interrupted epoch at the next unseen batch, in the same order.
    ``len()`` stays the full epoch's number of batches, as Lightning expects.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, shuffle: bool = True, **kwargs: Any) -> None:
        self.epoch_sampler = EpochShuffleSampler(len(dataset), seed, shuffle, batch_size)  # type: ignore[arg-type]
        super().__init__(dataset, batch_size=batch_size, sampler=self.epoch_sampler, **kwargs)
        self._epoch = 0
        self._batches_done = 0
        self._resume_at = 0

    def __iter__(self) -> Iterator[Any]:
        sampler = self.epoch_sampler
        sampler.epoch, sampler.start = self._epoch, self._resume_at * self.batch_size
        self._batches_done, self._resume_at = self._resume_at, 0
        for batch in super().__iter__():
            self._batches_done += 1
            yield batch
        self._epoch += 1
        self._batches_done = 0

    def state_dict(self) -> dict[str, int]:
        """The epoch in progress, the batches of it already handed out, and the pairs per global batch (which give
        those batches their meaning)."""
        return {
            "epoch": self._epoch,
            "batches_done": self._batches_done,
            "seed": self.epoch_sampler.seed,
            "global_batch_rows": self.batch_size * _rank_and_world()[1],
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at batch ``batches_done`` of epoch ``epoch``."""
        if state.get("seed", self.epoch_sampler.seed) != self.epoch_sampler.seed:
            raise ValueError(
                f"the checkpoint's data order used seed {state['seed']}, this run seed {self.epoch_sampler.seed}: "
                "resume with the same seed (and data.seed)"
            )
        self._epoch, self._resume_at = state["epoch"], state["batches_done"]
