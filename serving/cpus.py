"""How many CPUs this process may really use: affinity and cgroup quota, not the host's count;
and how many GPUs it sees.

``os.cpu_count()`` reports the host's CPUs; in a container limited to two of 96 CPUs it would
start 96 workers. The limit is the smaller of the CPU affinity mask and the cgroup CPU quota
(v2 ``cpu.max`` along this process's cgroup path, or v1 ``cpu.cfs_quota_us``).
"""

from __future__ import annotations

import importlib.metadata
import itertools
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
DEV = Path("/dev")


def available_cpus(
    cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP
) -> int:
    """Whole CPUs available to this process, at least 1 (a 1.5-CPU quota counts as 1)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_cpu_quota(cgroup_root, proc_self_cgroup)
    if quota is not None:
        count = min(count or 1, math.floor(quota))
    return max(1, count or 1)


def cgroup_cpu_quota(cgroup_root: Path, proc_self_cgroup: Path) -> float | None:
    """The tightest CPU quota (in CPUs) over this process's cgroups, or ``None`` if unlimited."""
    quotas = [*_v2_quotas(cgroup_root, proc_self_cgroup), _v1_quota(cgroup_root)]
    limits = [q for q in quotas if q is not None]
    return min(limits) if limits else None


def _v2_quotas(cgroup_root: Path, proc_self_cgroup: Path) -> list[float | None]:
    return [_read_cpu_max(d / "cpu.max") for d in cgroup_v2_path(cgroup_root, proc_self_cgroup)]


def cgroup_v2_path(cgroup_root: Path, proc_self_cgroup: Path) -> list[Path]:
    """This process's cgroup (v2) folder and its ancestors up to ``cgroup_root``: every
    ancestor's limit applies too. Inside a container's cgroup namespace the path is "/" and
    only the root folder is listed."""
    relative = "/"
    try:
        for line in proc_self_cgroup.read_text().splitlines():
            if line.startswith("0::"):
                relative = line[3:]
    except OSError:
        pass
    directory = cgroup_root / relative.lstrip("/")
    folders = [directory]
    while directory != cgroup_root and cgroup_root in directory.parents:
        directory = directory.parent
        folders.append(directory)
    return folders


def _read_cpu_max(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def _v1_quota(cgroup_root: Path) -> float | None:
    for folder in ("cpu,cpuacct", "cpu"):
        try:
            quota = int((cgroup_root / folder / "cpu.cfs_quota_us").read_text())
            period = int((cgroup_root / folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 else None
    return None


def visible_gpus(environ: Mapping[str, str] = os.environ, dev: Path = DEV) -> int:
    """NVIDIA GPUs this process may use, without loading CUDA: the devices
    ``CUDA_VISIBLE_DEVICES`` lists when it is set, else the ``/dev/nvidiaN`` device files (a
    container sees only the GPUs it was given), 0 without any."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
        # CUDA stops at the first invalid entry; "-1" is the usual way to hide every GPU
        return len(list(itertools.takewhile(lambda d: not d.startswith("-"), devices)))
    try:
        return sum(1 for entry in dev.iterdir() if re.fullmatch(r"nvidia\d+", entry.name))
    except OSError:
        return 0


def gpu_runtime_installed() -> bool:
    """Whether the installed onnxruntime is the GPU build (read from its metadata: the master
    does not import onnxruntime)."""
    try:
        importlib.metadata.distribution("onnxruntime-gpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
