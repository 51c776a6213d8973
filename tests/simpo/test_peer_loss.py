"""What counts as a lost peer: the errors collectives raise when the process at the other end is gone."""

from __future__ import annotations

import torch.distributed as dist

from simpo.training.peer_loss import is_lost_peer


def test_collective_errors_of_a_dead_peer_are_recognised_and_others_are_not():
    gloo = RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:47803: Connection reset by peer.")
    assert is_lost_peer(gloo) and is_lost_peer(dist.DistBackendError("NCCL communicator was aborted on rank 0"))
    assert not is_lost_peer(RuntimeError("CUDA out of memory")) and not is_lost_peer(ValueError("Broken pipe"))
