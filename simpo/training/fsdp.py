"""FSDP2 (``fully_shard``) for Hugging Face causal LMs under Lightning's ``ModelParallelStrategy``.

Each decoder layer (the classes the model lists in ``_no_split_modules``, so Llama, Mistral, Gemma 2 and
Qwen need no code here) becomes its own FSDP unit, then the root. The policy can be built with its
parameters on the meta device (buffers stay real), so no rank but rank 0 ever holds a full copy: rank 0
builds or loads the full weights once and they are broadcast into the shards.
"""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.planner import ReadItem
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

from simpo.io import commit, load_plain, temporary_for
from simpo.models.structure import decoder_layer_classes

log = logging.getLogger(__name__)

MIXED_PRECISION = {  # trainer.precision -> FSDP2 (param dtype, gradient reduction dtype)
    "bf16-mixed": (torch.bfloat16, torch.float32),
    "bf16-true": (torch.bfloat16, torch.bfloat16),
    "16-mixed": (torch.float16, torch.float32),
}


def shard_policy(
    model: nn.Module,
    mesh: DeviceMesh,
    precision: str,
    cpu_offload: bool = False,
    reshard_after_forward: bool = True,
) -> None:
    """Apply ``fully_shard`` to every decoder layer, then to the root, in place.

    Args:
        mesh: the data-parallel device mesh.
        precision: ``trainer.precision``; ``bf16-mixed`` computes with bf16 parameters and reduces gradients
            in fp32, ``32-true`` stays fp32 throughout.
        cpu_offload: keep the sharded parameters, gradients and optimizer state in CPU memory.
        reshard_after_forward: free each layer's gathered parameters after its forward (ZeRO-3); False keeps
            them until backward (ZeRO-2-like: more memory, less communication).
    """
    kwargs: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
    if precision in MIXED_PRECISION:
        param_dtype, reduce_dtype = MIXED_PRECISION[precision]
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    if cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    layer_types = decoder_layer_classes(model)
    layers = [m for m in model.modules() if isinstance(m, layer_types)]
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    log.info("FSDP: %d %s units + root, precision %s, cpu_offload=%s", len(layers),
             "/".join(t.__name__ for t in layer_types), precision, cpu_offload)  # fmt: skip


def materialize(model: nn.Module, device: torch.device, full_state_dict: Callable[[], dict] | None) -> None:
    """Allocate the (sharded) meta parameters on ``device`` and fill them from rank 0's full state dict.

    Args:
        full_state_dict: on global rank 0, a function returning the full weights (a CPU state dict); ``None``
            on the other ranks, which receive their shards by broadcast.
    """
    buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    model.to_empty(device=device)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    weights = full_state_dict() if full_state_dict is not None else {}
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def gather_full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict on CPU on global rank 0 (empty elsewhere); every rank must call it."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


class PlainDataLoadPlanner(DefaultLoadPlanner):
    """``torch.distributed.checkpoint``'s default load planner, except that a shard's non-tensor entries (the
    optimizer's settings, ...) are read as plain data (``simpo.io.load_plain``), where the default unpickles them with
    ``weights_only=False`` and so would run code from the file.

    Args:
        path: the sharded checkpoint directory (for the messages).
        kwargs: ``DefaultLoadPlanner``'s (``allow_partial_load``).
    """

    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        loaded = load_plain(value, self.path, "ckpt_path")
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


class AtomicModelParallelStrategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` for pure FSDP whose checkpoints appear atomically.

    ``data_parallel_size="all"`` (the default) shards over every process (devices x nodes; Lightning's own
    ``"auto"`` means one group per node). A sharded checkpoint is a directory written by every rank into a
    temporary beside it, which rank 0 swaps into place once all ranks are done, so ``last.ckpt`` is always a
    complete checkpoint.
    """

    def __init__(self, data_parallel_size: int | str = "all", tensor_parallel_size: int = 1, **kwargs: Any) -> None:
        super().__init__(data_parallel_size=data_parallel_size, tensor_parallel_size=tensor_parallel_size, **kwargs)  # type: ignore[arg-type]

    def setup_environment(self) -> None:
        if self._data_parallel_size == "all":
            self._data_parallel_size = self.world_size
        super().setup_environment()

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's load, with the shards' non-tensor entries read as plain data (``PlainDataLoadPlanner``); a
        module with ``strict_loading = False`` (adapter runs: the checkpoint holds the trainable weights only) loads a
        sharded checkpoint partially: the weights it lacks keep their current (rebuilt) values."""
        from lightning.fabric.strategies import model_parallel
        from torch.distributed.checkpoint import load

        partial = self.lightning_module is not None and not self.lightning_module.strict_loading
        original = model_parallel._distributed_checkpoint_load
        model_parallel._distributed_checkpoint_load = lambda state, path: load(
            state, checkpoint_id=path, planner=PlainDataLoadPlanner(Path(path), allow_partial_load=partial)
        )
        try:
            return super().load_checkpoint(checkpoint_path, weights_only=True)
        finally:
            model_parallel._distributed_checkpoint_load = original

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any = None) -> None:
        """A sharded checkpoint is written by every rank into a temporary directory that rank 0 then commits
        (``simpo.io.commit``: the previous checkpoint stays whole until the new one is); a full one is a file, written
        by rank 0 through the checkpoint IO (``AtomicCheckpointIO``)."""
        if not self._save_distributed_checkpoint:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        target = Path(self.broadcast(str(filepath)))
        tmp = Path(self.broadcast(str(temporary_for(target, directory=True)) if self.global_rank == 0 else None))
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            self.barrier("checkpoint_written")
            if self.global_rank == 0:
                commit(tmp, target)
        finally:
            if self.global_rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
        self.barrier("checkpoint_committed")
