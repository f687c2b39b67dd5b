"""Choosing the torch device and the mixed-precision mode, in one place."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

from .errors import ScrError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")

# What ``auto`` means on a CPU, when set: "fp32" or "bf16" in place of asking the CPU. A CPU
# without native bf16 (AVX2 laptops and NUCs, most ARM boards) trains in fp32 and one with it in
# bf16, and the two give different maps; this lets one machine reproduce the other's numerics
# (the test suite sets it from SCR_TEST_PRECISION, for itself and the processes it starts).
CPU_PRECISION_ENV = "SCR_ROS_CPU_PRECISION"
CPU_PRECISIONS = ("fp32", "bf16")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; asking for CUDA without one is an error."""
    if isinstance(spec, torch.device):
        return spec
    spec = str(spec).lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ScrError(
                f"device {spec!r} requested but CUDA is not available (torch {torch.__version__}); use --device cpu"
            )
        return torch.device(spec)
    if spec == "cpu":
        return torch.device("cpu")
    raise ScrError(f"unknown device {spec!r}; use auto, cpu or cuda")


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_auto_precision() -> str:
    """What ``auto`` resolves to on this CPU: ``SCR_ROS_CPU_PRECISION`` when set, else bf16 where
    the CPU has native bf16 kernels and fp32 where it has not."""
    forced = os.environ.get(CPU_PRECISION_ENV, "").strip().lower()
    if forced:
        if forced not in CPU_PRECISIONS:
            raise ScrError(f"{CPU_PRECISION_ENV}={forced!r}: use fp32 or bf16, or unset it to let the CPU decide")
        return forced
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The dtype autocast should use, or ``None`` for plain fp32.

    ``auto`` means fp16 on CUDA (as ACE trains) and, on a CPU, :func:`cpu_auto_precision`: bf16
    where the CPU has native bf16 support, where it is about three times faster than fp32 for
    the 1x1 convolutions of the head, unless ``SCR_ROS_CPU_PRECISION`` says otherwise.
    """
    if precision not in PRECISIONS:
        raise ScrError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_auto_precision() == "bf16" else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context for ``dtype`` on ``device`` (a no-op for ``None``)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (the CLI's default preset depends on it)."""
    return torch.cuda.is_available()


def hardware_description(device: torch.device) -> str:
    """One line naming the GPU or CPU a figure was measured on, for reports and model cards."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    threads = torch.get_num_threads()
    return f"CPU: {cpu_name()}, {os.cpu_count()} cores, {threads} torch threads, torch {torch.__version__}"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's word for it elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
