"""A thin layer over torch.distributed: which rank this is, its device, and the few collectives the loop needs.

Without torchrun a run is simply world size 1 and nothing here touches
torch.distributed. Under `torchrun` the process group comes from the
environment it sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): NCCL
on CUDA, Gloo on the CPU. Each rank takes the GPU of its LOCAL_RANK.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import sys
import tempfile
from dataclasses import dataclass

import torch
import torch.distributed as dist

from multigan.errors import ConfigError, MultiganError

BACKENDS = ("auto", "nccl", "gloo")


class DistributedError(MultiganError):
    """The ranks of a torchrun launch could not form their process group."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks; world size 1 outside torchrun."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes files, logs and the progress bar."""
        return self.rank == 0


def launched() -> bool:
    """True in a process started by torchrun (or any launcher that sets its variables) with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current() -> World:
    """The world this process belongs to: the process group's if one is up, else world size 1."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def pick_device(name: str = "auto", world: World | None = None) -> torch.device:
    """'auto' takes cuda, then mps, then cpu; a named device must exist. Under torchrun, CUDA is the rank's own GPU."""
    world = world or current()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps and world.size == 1 else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but CUDA is not available")
        return torch.device("cuda", world.local_rank % torch.cuda.device_count()) if world.size > 1 else torch.device("cuda")
    if name == "mps" and not mps:
        raise ConfigError("device 'mps' was asked for but MPS is not available")
    return torch.device(name)


def setup(device: str = "auto", backend: str = "auto", timeout_s: float = 300.0) -> World:
    """Join the process group that torchrun's environment describes; world size 1 without torchrun.

    A world that cannot form (a wrong rendezvous address, a missing rank,
    NCCL without CUDA) raises DistributedError within `timeout_s` instead
    of hanging.
    """
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return current()
    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed: run without torchrun")
    if backend not in BACKENDS:
        raise ConfigError(f"the distributed backend must be one of {BACKENDS}, got {backend!r}")
    wants_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if backend == "auto":
        backend = "nccl" if wants_cuda else "gloo"
    if backend == "nccl" and not (torch.cuda.is_available() and wants_cuda):
        raise DistributedError("the NCCL backend needs CUDA devices: train on CUDA, or use the gloo backend on CPUs")
    world = World(int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    if backend == "nccl":
        torch.cuda.set_device(pick_device("cuda", world))
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        with _native_stderr_held():
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
            # The first collective is where a missing rank shows: wait for it here, within the timeout.
            dist.barrier(**({"device_ids": [torch.cuda.current_device()]} if backend == "nccl" else {}))
    except (RuntimeError, ValueError, OSError) as e:  # DistStoreError and DistNetworkError are RuntimeErrors
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise DistributedError(
            f"rank {world.rank} of {world.size} could not form the process group ({backend}, rendezvous {where}) "
            f"within {timeout_s:g} s: {first}; check torchrun's --rdzv-endpoint or MASTER_ADDR/MASTER_PORT, "
            "and that every node was started") from None
    return world


@contextlib.contextmanager
def _native_stderr_held():
    """Hold what C++ code writes to stderr while the group forms: c10d logs each failed connection
    with a 40-line stack trace. On success it is passed on; on failure our one line replaces it."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured, embedded)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), fd)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            if ok:
                held.seek(0)
                os.write(fd, held.read())


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def any_true(flag: bool, world: World, device: torch.device) -> bool:
    """True when `flag` holds on some rank."""
    if world.size == 1:
        return flag
    t = torch.tensor([int(flag)], device=device, dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean(x: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of `x` over the ranks (in place; `x` itself outside torchrun)."""
    if world.size > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= world.size
    return x


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
