"""torchrun integration: NCCL on GPUs, gloo on CPU; a no-op for a single process."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from smolhub_hub.errors import UserError


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def all_true(self, flag: torch.Tensor) -> bool:
        """A 0-dim bool tensor that must hold on every rank: False on one rank is False on all of them."""
        if self.enabled:
            flag = flag.to(torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag)

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t = t / self.world_size
        return t


def pick_device(requested: str = "auto", local_rank: int = 0) -> str:
    """auto, cpu, cuda (this process's GPU under torchrun), cuda:N or mps, checked against this machine.

    The one device rule of the repository: the trainers, inference, the demos and smol_experiments use it."""
    kind, _, index = requested.partition(":")
    if requested == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if requested in ("cpu", "mps") or (kind == "cuda" and (not index or index.isdigit())):
        if kind == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {requested} asked for, but no CUDA GPU is visible; use --device cpu")
        if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
            raise UserError(f"--device {requested}: this machine has {torch.cuda.device_count()} GPU(s), "
                            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        if kind == "mps" and not torch.backends.mps.is_available():
            raise UserError("--device mps asked for, but this machine has no Apple GPU (MPS); use --device cpu")
        return f"cuda:{local_rank}" if requested == "cuda" else requested
    raise UserError(f"--device {requested!r} is not a device; use auto, cpu, cuda, cuda:N or mps")


def global_rank() -> int:
    """This process's rank among all of torchrun's (0 without torchrun), known before the process group exists."""
    return int(os.environ.get("RANK", "0"))


def setup(requested_device: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = global_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local)
    if world > 1 and not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, **_restart_store(rank, world))
    return DistInfo(rank, local, world, device)


def _restart_store(rank: int, world: int) -> dict:
    """After a torchrun restart, keep this attempt's rendezvous keys apart from the failed attempt's.

    Without a fresh prefix, a restarted gloo group can read the dead attempt's peer addresses and hang
    in connectFullMesh; the first attempt uses torch's defaults unchanged.
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if attempt == "0" or "MASTER_ADDR" not in os.environ:
        return {}
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent_store and rank == 0)
    return {"store": dist.PrefixStore(f"smolhub/attempt{attempt}", store), "rank": rank, "world_size": world}


def teardown():
    if dist.is_initialized():
        # A gloo worker thread drops its last finished collective (the save's barrier) just after the caller has
        # moved on, and dropping it takes the GIL. The group's destructor, run later with the GIL held when DDP's
        # reducer goes, joins that thread: a deadlock, seen once at the end of a 2-process CPU run. Sleeping
        # releases the GIL so the worker finishes first. (No barrier here: on an error path a rank may be gone.)
        time.sleep(0.2)
        dist.destroy_process_group()
