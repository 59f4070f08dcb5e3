"""The torchrun process group, for the stages that shard their work over ranks (train, mine).

Its own module so that a stage needing the rank does not import another stage's code for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the torchrun process group if launched under torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info


def all_reduce(t: torch.Tensor, d: DistInfo, average: bool = False) -> torch.Tensor:
    """Sum (or average) `t` over the ranks in place; a no-op in a single process."""
    if d.world > 1:
        dist.all_reduce(t)
        if average:
            t /= d.world
    return t
