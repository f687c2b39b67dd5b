"""Mapping on several workers with PyTorch DistributedDataParallel, in one place.

``torchrun --nproc_per_node N ... scr map ...`` starts N copies of ``scr map``; each calls
:func:`init_from_env`, which joins the process group torchrun describes in the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): NCCL when the
workers have GPUs, gloo on CPUs. Outside torchrun every function here behaves as a single
worker (rank 0 of 1), so the engines call them unconditionally.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn as nn

from .errors import ScrError


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this worker writes files and reports progress (rank 0, or the only worker)."""
    return rank() == 0


def launched() -> bool:
    """Whether torchrun (or another launcher) started this process as a worker (``torchrun
    --nproc_per_node 1`` too: a group of one runs the same DDP code, NCCL included)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ and "MASTER_ADDR" in os.environ


def init_from_env(device: torch.device) -> bool:
    """Join the process group of a torchrun launch (no-op otherwise); returns whether joined.

    Each worker uses the GPU of its ``LOCAL_RANK`` (``cuda:LOCAL_RANK``) when ``device`` is CUDA."""
    if not launched() or active():
        return active()
    if not dist.is_available():
        raise ScrError("this torch build has no torch.distributed; map with one worker")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def local_device(device: torch.device) -> torch.device:
    """This worker's device: ``cuda:LOCAL_RANK`` for a CUDA device under several workers."""
    if device.type == "cuda" and active() and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def all_sum(value: float) -> float:
    """The sum of ``value`` over the workers."""
    if not active():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item())


def all_gather_ints(value: int) -> list[int]:
    """Every worker's ``value``, in rank order (``[value]`` for one worker)."""
    if not active():
        return [int(value)]
    t = torch.tensor([int(value)], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    out = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [int(x.item()) for x in out]


def gather_rows(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Every worker's ``rows`` (N_r, ...) put together in the order of their global ``index``
    (N_r,), on every worker (gloo and NCCL gather equal shapes, so the parts are padded)."""
    if not active():
        return rows[torch.argsort(index)]
    sizes = all_gather_ints(len(rows))
    most = max(sizes)
    cuda = dist.get_backend() == "nccl"
    dev = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    padded = torch.zeros((most, *rows.shape[1:]), dtype=rows.dtype, device=dev)
    padded[: len(rows)] = rows
    pad_index = torch.zeros(most, dtype=torch.int64, device=dev)
    pad_index[: len(index)] = index
    parts, indices = [torch.zeros_like(padded) for _ in sizes], [torch.zeros_like(pad_index) for _ in sizes]
    dist.all_gather(parts, padded)
    dist.all_gather(indices, pad_index)
    whole = torch.cat([p[:n] for p, n in zip(parts, sizes)])
    order = torch.argsort(torch.cat([i[:n] for i, n in zip(indices, sizes)]))
    return whole[order].to(rows.device)


def broadcast_module(module: nn.Module) -> None:
    """Give every worker rank 0's parameters and buffers of ``module`` (e.g. a fitted PCA)."""
    if not active():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        if t.numel():
            dist.broadcast(t.data, src=0)


def shutdown(wait: bool = True) -> None:
    """Leave the process group. ``wait``: first wait for every worker to get here, so none tears
    its side down while another still works (that aborted gloo workers at exit); pass False
    after an error, when the others may never arrive."""
    if active():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
