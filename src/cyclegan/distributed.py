"""Data-parallel training over processes started by ``torchrun`` (PyTorch's torch.distributed).

``torchrun --nproc-per-node N -m cyclegan train ...`` starts N copies; each reads its rank from the
environment, trains on its own shard of every global batch, and averages gradients before each
optimiser step, so N processes with batch B compute what one process with batch N*B computes.

Gradients are averaged by one all-reduce of the flattened gradients per optimiser step rather than
by wrapping the networks in ``DistributedDataParallel``: a CycleGAN iteration calls each generator
three times and each discriminator twice before one backward pass, runs the discriminators with
frozen parameters inside the generator's loss, and may take double-backward gradient penalties;
DDP's per-parameter hooks assume one forward per backward with every parameter trainable. The cost
is that communication does not overlap the backward pass.

Generated images are all-gathered before the image pool, so every process holds the same pool
(same seed, same inputs, same draws) and rank 0's checkpoint describes all of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.nn.functional import all_reduce  # differentiable: backward all-reduces too


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> DistInfo:
    """The process's place in a torchrun job (WORLD_SIZE/RANK/LOCAL_RANK), or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(rank=int(os.environ["RANK"]), world_size=world,
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def init(info: DistInfo, device: torch.device) -> None:
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def shutdown(info: DistInfo, *, clean: bool = True) -> None:
    """Tear the process group down while the interpreter is fully alive: left to interpreter exit,
    gloo's worker threads can outlive it and abort the process (SIGABRT). After an error (``clean``
    False) there is no final barrier: the peers may never reach it."""
    if info.enabled and dist.is_initialized():
        try:
            if clean:
                dist.barrier()  # nobody destroys the group while a peer still talks to it
        finally:
            dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def average_gradients(params: Iterable[torch.nn.Parameter], info: DistInfo) -> None:
    """Replace each gradient by its mean over processes (one flattened all-reduce)."""
    if not info.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(info.world_size)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def gather_batch(x: Tensor, info: DistInfo) -> Tensor:  # [B, ...] -> [world * B, ...] in rank order
    if not info.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(info.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def local_slice(x: Tensor, info: DistInfo) -> Tensor:  # [world * B, ...] -> this rank's [B, ...]
    if not info.enabled:
        return x
    b = x.shape[0] // info.world_size
    return x[info.rank * b : (info.rank + 1) * b]


def mean_over_processes(x: Tensor, info: DistInfo) -> Tensor:
    if not info.enabled:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / info.world_size


def global_mean(x: Tensor, info: DistInfo) -> Tensor:
    """The mean of ``x`` over the global batch (every process's share), differentiably.

    Losses that compare against a batch average (the relativistic loss) need the average of the
    whole global batch, as one process with that batch would compute it. The all-reduce's backward
    sums the incoming gradients of every process, and ``average_gradients`` then divides by the
    process count, which gives exactly the single-process gradient (every process holds an equal
    share of the batch).
    """
    local = x.mean()
    if not info.enabled:
        return local
    return all_reduce(local) / info.world_size
