"""Data-parallel plumbing of a training run (torchrun): this process's rank, the process group,
and the collectives the loop needs. With one process every call is a no-op.

The rule the loop relies on: every rank draws the same shuffled global batch and the same
augmentation parameters and takes its contiguous shard; the loss is scaled so that DDP's averaged
gradient is the global batch's; before each Hebbian step :func:`gather_recorded_activity` replaces
each column layer's recorded activity (its shard) by the whole batch's, so every rank applies the
identical full-batch update; only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run (torchrun's environment variables)."""

    world: int = 1          # processes in the run
    rank: int = 0           # this process, 0 .. world - 1
    local_rank: int = 0     # this process on its machine (its GPU index)
    local_world: int = 1    # processes on this machine (they share its CPU cores)

    @classmethod
    def from_env(cls) -> "Ranks":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
                   int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    def log(self, msg: str) -> None:
        if self.main:
            print(msg, flush=True)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """The block runs on rank 0 first, then on the others (rank 0 fills a cache they read).
        Rank 0 releases the others even when its block fails."""
        if not self.main:
            self.barrier()
        try:
            yield
        finally:
            if self.main:
                self.barrier()

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the ranks, in place."""
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def max_(self, t: torch.Tensor) -> torch.Tensor:
        """``t``'s maximum over the ranks, in place (one decision for all ranks)."""
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t

    def gather_objects(self, obj: torch.Tensor) -> list[torch.Tensor]:
        """``obj`` of every rank, in rank order (``[obj]`` with one process)."""
        if self.world == 1:
            return [obj]
        out = [torch.empty_like(obj) for _ in range(self.world)]
        dist.all_gather_object(out, obj)
        return out


@contextlib.contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[None]:
    """Join the run's process group for the block (NCCL on CUDA, gloo on the CPU) unless one is
    already initialised (then the caller owns it)."""
    if ranks.world == 1 or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def rng_states(ranks: Ranks, device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(CPU RNG state of every rank, CUDA RNG state of every rank; empty on the CPU): collective,
    every rank calls it."""
    cpu = torch.get_rng_state()
    if device.type != "cuda":
        return ranks.gather_objects(cpu), []
    return ranks.gather_objects(cpu), ranks.gather_objects(torch.cuda.get_rng_state(device))


def _all_gather_cat(t: torch.Tensor, world: int) -> torch.Tensor:
    t = t.contiguous()
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t)
    return torch.cat(parts, 0)


def gather_recorded_activity(model: nn.Module, world: int) -> bool:
    """Replace each column layer's recorded activity (this rank's shard of the batch) by the whole
    batch's, concatenated in rank order. Returns False if the column records nothing known."""
    layers = getattr(getattr(model, "column", None), "layers", None)
    if layers is None:
        return False
    found = False
    for layer in layers.values():
        post = getattr(layer, "last_post", None)
        if post is None:
            continue
        found = True
        layer.last_post = _all_gather_cat(post, world)
        layer.last_pre = {k: _all_gather_cat(v, world) for k, v in layer.last_pre.items()}
    return found


def broadcast_module(module: nn.Module) -> None:
    """Every parameter and buffer of ``module`` set to rank 0's."""
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, 0)


def data_parallel(model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """What the optimiser steps call: ``model`` itself with one process, else its
    ``DistributedDataParallel`` wrapper (buffers broadcast only when BatchNorm has some to keep equal)."""
    if ranks.world == 1:
        return model
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=has_bn)


def set_rng_states(ranks: Ranks, device: torch.device, cpu_states: list[torch.Tensor],
                   cuda_states: list[torch.Tensor] | None) -> bool:
    """Set this rank's CPU (and CUDA) RNG state from :func:`rng_states` of a checkpoint; False
    (nothing set) when the checkpoint was written by another number of ranks."""
    if len(cpu_states) != ranks.world:
        return False
    torch.set_rng_state(cpu_states[ranks.rank])
    if device.type == "cuda" and cuda_states:
        torch.cuda.set_rng_state(cuda_states[ranks.rank], device)
    return True
