"""Work split across processes with ``torch.distributed`` (``torchrun``, ``srun``).

mi_cluster never starts a process group itself, except the ``mi-cluster collect`` command:
a script launched by ``torchrun`` calls ``torch.distributed.init_process_group`` (gloo on
CPUs, nccl on GPUs) and then the same functions as in one process. Where a function splits
its work (store shards, patching passes), rank ``r`` of ``w`` takes items ``r, r + w, ...``
and every rank ends with the whole result. Without an initialised group everything runs in
this process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import Tensor

__all__ = ["barrier", "distributed_rank", "my_share", "sum_across_ranks"]

T = TypeVar("T")


def distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: from ``torch.distributed`` when it is
    initialised, else ``(0, 1)``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if distributed_rank()[1] > 1:
        torch.distributed.barrier()


def my_share(items: Sequence[T]) -> list[T]:
    """This rank's items: ``items[rank::world_size]`` (all of them in one process)."""
    rank, world = distributed_rank()
    return list(items[rank::world])


def sum_across_ranks(x: Tensor) -> Tensor:
    """``x`` summed over the ranks, in place, on every rank (a no-op in one process). Each
    rank fills its own entries and leaves the others at zero, so the sum is exact. With
    the gloo backend a GPU tensor travels through the CPU."""
    if distributed_rank()[1] == 1:
        return x
    cpu = x.device.type != "cpu" and torch.distributed.get_backend() == "gloo"
    buf = x.cpu() if cpu else x
    torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.SUM)
    if cpu:
        x.copy_(buf)
    return x
