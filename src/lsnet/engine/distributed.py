"""Process-group helpers for ``torchrun`` (gloo on CPU, NCCL on CUDA)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError

__all__ = ["DistInfo", "init_distributed", "all_reduce_sum", "barrier", "cleanup", "resolve_device",
           "parse_device", "check_device_available"]


@dataclass
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this host (torchrun's LOCAL_WORLD_SIZE)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def parse_device(name: str) -> torch.device:
    """A ``--device`` value as a device, or :class:`ConfigError` for one that names none
    (``cuda:1`` is fine; ``cuda:x``, ``gpu`` are not). Whether it is present is not checked."""
    try:
        return torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N (a GPU's index), got {name!r}") from None


def check_device_available(device: torch.device, name: str) -> None:
    """:class:`ConfigError` when ``device`` is a CUDA device this machine does not have."""
    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for but CUDA is not available")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: there is no such GPU (this machine has {torch.cuda.device_count()}: "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1})")


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """``auto`` picks CUDA (this process's local GPU) when available, else the CPU; ``cuda:N``
    names one GPU. :class:`ConfigError` for a malformed or missing device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = parse_device(name)
    check_device_available(device, name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", info.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                    int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over all processes (a no-op in a single process)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    """Wait for every process."""
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Leave the process group."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
