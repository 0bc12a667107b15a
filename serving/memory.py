"""Memory as the kernel counts it: a process's resident set, and what this container may use.

A multi-model endpoint's budget is the container's memory limit: the cgroup's (v2
``memory.max`` along this process's cgroup path, or v1 ``memory.limit_in_bytes``), else the
machine's. A model's footprint is what its load added to a worker's resident set.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from pathlib import Path

from .cpus import CGROUP_ROOT, PROC_SELF_CGROUP, cgroup_v2_path

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

MIB = 1024 * 1024

#: cgroup v1 writes "no limit" as a huge number (a page-rounded 2**63 - 1).
UNLIMITED = 1 << 60

MEMINFO = Path("/proc/meminfo")


def resident_bytes(pid: int | None = None) -> int:
    """The resident set of ``pid`` (this process by default), or 0 if it is gone."""
    try:
        pages = (Path(f"/proc/{pid or 'self'}/statm").read_text()).split()[1]
    except (OSError, IndexError):
        return 0
    return int(pages) * PAGE_BYTES


def trim() -> None:
    """Give the memory the C allocator holds free back to the system (glibc's
    ``malloc_trim``; nothing elsewhere): what an unloaded model took then leaves the resident
    set, and the next load's growth is its own."""
    release = _malloc_trim()
    if release is not None:
        release(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:  # the process's own symbols, the C library's among them
        function: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return function


def memory_limit(
    cgroup_root: Path = CGROUP_ROOT,
    proc_self_cgroup: Path = PROC_SELF_CGROUP,
    meminfo: Path = MEMINFO,
) -> int:
    """Bytes this process's container may use: the tightest cgroup limit, else the machine's
    memory."""
    limits = [*_v2_limits(cgroup_root, proc_self_cgroup), _read_limit(_v1_file(cgroup_root))]
    limits.append(_total_memory(meminfo))
    return min(limit for limit in limits if limit is not None)


def _v2_limits(cgroup_root: Path, proc_self_cgroup: Path) -> list[int | None]:
    return [_read_limit(d / "memory.max") for d in cgroup_v2_path(cgroup_root, proc_self_cgroup)]


def _v1_file(cgroup_root: Path) -> Path:
    return cgroup_root / "memory" / "memory.limit_in_bytes"


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():  # "max"
        return None
    value = int(text)
    return value if value < UNLIMITED else None


def _total_memory(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
