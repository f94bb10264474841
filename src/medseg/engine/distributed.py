"""Data-parallel training across processes: torchrun's environment → a process group, and helpers.

``torchrun --nproc_per_node=N -m medseg train cfg.yaml`` starts N processes and gives each the
standard variables ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`distributed_session` turns them into a process group (``nccl`` on CUDA, ``gloo`` on the
CPU) and every helper below answers for a single process as well (rank 0 of 1), so code written
with them runs unchanged without torchrun. Several nodes are torchrun's job too (its rendezvous);
on SLURM, one task per node::

    srun torchrun --nnodes=$SLURM_NNODES --nproc_per_node=4 --rdzv_backend=c10d \\
        --rdzv_endpoint=$HEAD:29500 -m medseg train cfg.yaml

with ``HEAD=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1)``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from medseg.errors import ConfigError

T = TypeVar("T")

__all__ = [
    "all_gather_object",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "cleanup",
    "distributed_session",
    "env_world_size",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "per_rank_batch_size",
    "rank_device",
    "sync_buffers",
    "wrap_model",
]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from exc


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it; 1 when the process was not started by a launcher."""
    return _env_int("WORLD_SIZE", 1)


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_world_size() -> int:
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else env_world_size()


def get_rank() -> int:
    """This process's global rank (0 without a group; torchrun's ``RANK`` before it is created)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else _env_int("RANK", 0)


def get_local_rank() -> int:
    """This process's rank on its node (picks its GPU); 0 without torchrun."""
    return _env_int("LOCAL_RANK", 0)


def is_main_process() -> bool:
    """Rank 0: the process that writes checkpoints, logs and reports."""
    return get_rank() == 0


#: the device names medseg accepts
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def check_device(name: str, what: str = "device") -> torch.device:
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a device
    that exists on this machine; anything else, or CUDA without a GPU, is a :class:`ConfigError`
    naming ``what`` (``--device``, ``train.device``) and the value."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{what} {name}: no CUDA GPU is available on this machine (torch.cuda.is_available() "
                "is False); use cpu, or auto to take a GPU when there is one"
            )
        index = int(text[5:]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"{what} {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), cuda:0 "
                f"to cuda:{torch.cuda.device_count() - 1}"
            )
        return torch.device(text)
    raise ConfigError(f"{what} {name}: not a device medseg can use; expected {DEVICE_CHOICES}")


def rank_device(name: str = "auto") -> torch.device:
    """The device of this rank: ``auto``/``cuda`` → ``cuda:LOCAL_RANK`` when several processes share CUDA.

    A fixed ``cuda:N`` with more than one process is an error: every rank would use the same GPU.
    """
    if str(name).strip().lower().startswith("cuda:") and env_world_size() > 1:
        raise ConfigError(
            f"train.device is {name} but {env_world_size()} processes run: use 'cuda' or 'auto' "
            "(each rank takes cuda:LOCAL_RANK)"
        )
    device = check_device(name, "train.device")
    if device.type != "cuda" or env_world_size() == 1:
        return device
    return torch.device("cuda", get_local_rank())


def init_distributed(device: torch.device) -> bool:
    """Create the process group from torchrun's environment; True if this call created it.

    Nothing happens (False) with ``WORLD_SIZE`` unset or 1, or when a group exists already.
    The backend is ``nccl`` for a CUDA device, ``gloo`` otherwise.
    """
    if env_world_size() == 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE is {env_world_size()} but {missing} are not set: start with torchrun")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, init_method="env://")
    return True


def cleanup() -> None:
    """Destroy the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session(device: torch.device) -> Iterator[bool]:
    """:func:`init_distributed` for the block; the group it created (only) is destroyed on exit."""
    created = init_distributed(device)
    try:
        yield is_distributed()
    finally:
        if created:
            cleanup()


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (picklable; returned as is in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def per_rank_batch_size(global_batch: int, world_size: int, accumulate_steps: int = 1) -> int:
    """Items per rank and micro-step when ``global_batch`` items make one optimiser step.

    ``global_batch`` must be a multiple of ``world_size × accumulate_steps`` (a clear error
    otherwise), so that every rank's micro-batch has the same size and DDP's gradient mean over
    ranks is the mean over the global batch.
    """
    if world_size < 1 or accumulate_steps < 1:
        raise ConfigError(
            f"world size ({world_size}) and train.accumulate_steps ({accumulate_steps}) must be ≥ 1"
        )
    parts = world_size * accumulate_steps
    if global_batch < 1 or global_batch % parts:
        raise ConfigError(
            f"train.batch_size {global_batch} (the global batch of one optimiser step) must be a positive "
            f"multiple of world size {world_size} × train.accumulate_steps {accumulate_steps} = {parts}"
        )
    return global_batch // parts


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over the ranks (a detached copy; ``value`` itself in a single process)."""
    if not is_distributed():
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


def sync_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank, in place.

    Each rank updates its running statistics with its own batches after DDP's broadcast at the
    start of a forward; validating with rank 0's, the ones the checkpoint stores, keeps the ranks'
    shares of the validation consistent.
    """
    if is_distributed():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=src)


def wrap_model(
    model: nn.Module, device: torch.device, find_unused_parameters: bool = False, sync_batchnorm: bool = False
) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` inside a process group of > 1 ranks, else ``model``.

    The wrapper shares the module's parameters, so an optimizer built on ``model`` steps them, and
    ``model`` (not the wrapper) is what checkpoints store: their keys stay the single-process ones.
    ``sync_batchnorm`` replaces BatchNorm by ``SyncBatchNorm`` in place (CUDA only in torch).
    """
    if not is_distributed():
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            raise ConfigError("train.sync_batchnorm needs CUDA (torch's SyncBatchNorm has no CPU kernel)")
        _convert_batchnorm_in_place(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def _convert_batchnorm_in_place(model: nn.Module) -> None:
    for name, child in model.named_children():
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(child)
        if converted is not child:
            setattr(model, name, converted)
