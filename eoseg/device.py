"""Which device a process computes on, and its place in a torchrun job.

Training and inference both start here: :func:`resolve_device` turns DEVICE into a torch
device, :class:`Processes` reads the variables torchrun sets, :func:`process_device` gives
each process of a job its own GPU, and :func:`process_group` / :func:`distributed_rank`
join the job's process group.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from eoseg.errors import EosegError


def resolve_device(name: str) -> torch.device:
    """DEVICE as a torch device: "auto" is cuda when a GPU is available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EosegError(f"DEVICE={name} but no CUDA GPU is available; use DEVICE=cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise EosegError(f"DEVICE {name!r} is not a device; use 'auto', 'cpu' or 'cuda'") from None


@dataclass(frozen=True)
class Processes:
    """This process's place in a torchrun job; rank 0 of 1 when started without torchrun."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_environment(cls) -> "Processes":
        """Read the variables torchrun sets for each process it starts."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        return cls(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), world_size)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def process_device(device_name: str, processes: Processes) -> torch.device:
    """The device of this process: DEVICE, except that each process of a torchrun job on GPUs
    takes the GPU of its LOCAL_RANK."""
    device = resolve_device(device_name)
    if processes.distributed and device.type == "cuda":
        if device_name not in ("auto", "cuda"):
            raise EosegError(f"DEVICE={device_name} under torchrun: use DEVICE=cuda, each process takes the GPU of its LOCAL_RANK")
        device = torch.device("cuda", processes.local_rank)
    return device


@contextlib.contextmanager
def process_group(device_name: str):
    """Join the torchrun job this process was started in, if any; yield (Processes, device).

    Each process of a job takes the GPU of its LOCAL_RANK (nccl) or runs on CPU (gloo).
    """
    processes = Processes.from_environment()
    device = process_device(device_name, processes)
    if not processes.distributed:
        yield processes, device
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield processes, device
    finally:
        dist.destroy_process_group()


def distributed_rank() -> tuple[int, int]:
    """(rank, world size); joins the torchrun process group when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def leave_process_group() -> None:
    """Leave the torchrun process group, if joined: left open, gloo's threads abort the process
    at exit now and then (SIGABRT)."""
    if dist.is_initialized():
        dist.destroy_process_group()
