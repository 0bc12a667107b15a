"""Which onnxruntime execution providers a worker uses, and on which GPU.

``auto`` takes the best the installed onnxruntime offers: CUDA before CPU. onnxruntime itself
quietly falls back to the CPU when it cannot start a requested GPU provider (no device, a
missing CUDA or cuDNN library); here that stops the worker with the reason instead, unless a
CPU fall-back is explicitly allowed. Workers on a host with several GPUs are spread across
them by worker number.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

log = logging.getLogger(__name__)

AUTO = "auto"
CPU = "CPUExecutionProvider"
#: GPU providers ``auto`` prefers, best first; each takes a ``device_id`` option.
GPU_PROVIDERS = ("CUDAExecutionProvider",)

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def choose_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """The providers to ask for: ``auto`` resolved, explicit ones checked against ``available``."""
    if list(requested) == [AUTO]:
        return [*(p for p in GPU_PROVIDERS if p in available), CPU]
    missing = [provider for provider in requested if provider not in available]
    if missing:
        raise ModelLoadError(
            f"execution providers {', '.join(missing)} are not available in this "
            f"onnxruntime (available: {', '.join(available)})"
        )
    return list(requested)


def visible_gpus(environ: Mapping[str, str] = os.environ, nvidia_gpus: Path = NVIDIA_GPUS) -> int:
    """GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else the driver's count."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([device for device in visible.split(",") if device.strip()])
    try:
        return sum(1 for _ in nvidia_gpus.iterdir())
    except OSError:
        return 0


def provider_options(providers: Sequence[str], device_id: int) -> list[Any]:
    """``providers`` as onnxruntime takes them, GPU ones with their ``device_id``."""
    return [
        (provider, {"device_id": str(device_id)}) if provider in GPU_PROVIDERS else provider
        for provider in providers
    ]


def check_session_providers(
    requested: Sequence[str], in_use: Sequence[str], allow_cpu_fallback: bool
) -> None:
    """Refuse a session that silently left out a GPU provider it was asked for."""
    dropped = [p for p in requested if p in GPU_PROVIDERS and p not in in_use]
    if not dropped:
        return
    reason = (
        f"onnxruntime could not start {', '.join(dropped)} (no usable GPU, or missing CUDA/"
        "cuDNN libraries; its own log says which) and would run on the CPU"
    )
    if not allow_cpu_fallback:
        raise ModelLoadError(f"{reason}; set SERVING_ALLOW_CPU_FALLBACK=true to accept that")
    log.warning("%s, as SERVING_ALLOW_CPU_FALLBACK allows", reason)
