"""What the workers of one multi-model server agree on: which models are loaded.

The master makes a private folder (under ``/dev/shm``: memory, and writable in a read-only
container) before it forks, and removes it when it exits. In it:

``registry.json``
    ``{"generation": n, "models": {name: entry}}``, the one truth about what is loaded. Every
    change takes an exclusive ``flock`` on ``lock``, rereads the file and writes it whole under
    a new name that then replaces it (``rename``), with the generation one higher. Readers take
    no lock: they see the old file or the new one, never half of one, and reread only when the
    file's inode changed (one ``stat``).
``worker-<pid>.json``
    Each worker's report: the registry generation it has applied (every model it lists loaded
    there, every other one freed), its own memory without models, each model's footprint and
    last use there, and the models it failed to load. A change is done, everywhere, once every
    live worker reports its generation or a later one.
``worker-<pid>.sock``
    A datagram socket each worker waits on: a change sends a byte to every one, so peers apply
    it at once rather than at their next poll.

No numpy, no Werkzeug: the master only makes and removes the folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

#: Where the folder goes: memory-backed, and writable in a read-only container.
SHARED_MEMORY = Path("/dev/shm")  # noqa: S108 - a private folder made by mkdtemp

LOADING, LOADED = "loading", "loaded"

#: Seconds between two tries at the registry's lock (each hold lasts microseconds).
LOCK_POLL_SECONDS = 0.001


@dataclass(frozen=True)
class Entry:
    """A model in the registry: being loaded by ``owner`` (a worker's pid), or loaded."""

    url: str
    state: str
    owner: int
    #: Bytes per worker: on-disk size while loading, then the loading worker's measured
    #: footprint.
    footprint: int
    #: The generation that made it ``loaded``: a model loaded again under the same name is
    #: another model.
    generation: int = 0
    loaded_at: float = 0.0


@dataclass
class Registry:
    generation: int
    models: dict[str, Entry]


@dataclass
class Report:
    """One worker's report (see the module docstring)."""

    pid: int
    generation: int = -1
    baseline: int = 0
    footprints: dict[str, int] = field(default_factory=dict)
    last_used: dict[str, float] = field(default_factory=dict)
    #: Name -> [generation, reason] of loads that failed in this worker.
    failed: dict[str, list[Any]] = field(default_factory=dict)


class SharedStore:
    """The folder and its files, as every process of one server sees them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        #: The process that made it, and removes it.
        self.master = os.getpid()
        self._registry_path = folder / "registry.json"
        self._cached: tuple[int, Registry] | None = None

    @classmethod
    def create(cls) -> SharedStore:
        """A new, empty store (in the master, before the workers fork)."""
        parent = SHARED_MEMORY if os.access(SHARED_MEMORY, os.W_OK) else None
        folder = Path(tempfile.mkdtemp(prefix="serving-models-", dir=parent))
        store = cls(folder)
        store._write(Registry(0, {}))
        (folder / "lock").touch()
        return store

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def read(self) -> Registry:
        """The registry as last written (reread only when it changed)."""
        inode = os.stat(self._registry_path).st_ino
        if self._cached is None or self._cached[0] != inode:
            with self._registry_path.open("rb") as file:
                inode = os.fstat(file.fileno()).st_ino
                self._cached = (inode, _parse(file.read()))
        return self._cached[1]

    @contextlib.contextmanager
    def change(self) -> Iterator[Registry]:
        """The registry to change in place, under the lock; written back as the next
        generation (``registry.generation`` is already that one) if its models changed, and
        every worker woken."""
        with self._locked():
            current = self.read()
            registry = Registry(current.generation + 1, dict(current.models))
            yield registry
            changed = registry.models != current.models
            if changed:
                self._write(registry)
        if changed:
            self.notify()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.folder / "lock").open("rb") as lock:
            while True:  # without blocking the event loop: a hold is a read and a write
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(LOCK_POLL_SECONDS)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, registry: Registry) -> None:
        data = {
            "generation": registry.generation,
            "models": {name: asdict(entry) for name, entry in registry.models.items()},
        }
        _replace(self._registry_path, orjson.dumps(data))

    # -- the workers' reports and wake-ups

    def write_report(self, report: Report) -> None:
        _replace(self.folder / f"worker-{report.pid}.json", orjson.dumps(asdict(report)))

    def reports(self) -> list[Report]:
        """The reports of the live workers (those of dead ones are removed)."""
        found = []
        for path in self.folder.glob("worker-*.json"):
            pid = int(path.stem.removeprefix("worker-"))
            if not alive(pid):
                self.forget(pid)
                continue
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                found.append(Report(**orjson.loads(path.read_bytes())))
        return found

    def forget(self, pid: int) -> None:
        for suffix in (".json", ".sock"):
            with contextlib.suppress(OSError):
                (self.folder / f"worker-{pid}{suffix}").unlink()

    def listen(self, pid: int) -> socket.socket:
        """The socket worker ``pid`` is woken on."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = self.folder / f"worker-{pid}.sock"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock.bind(str(path))
        return sock

    def notify(self) -> None:
        """Wake every worker (one that cannot be woken now looks again within a second)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for path in self.folder.glob("worker-*.sock"):
                try:
                    sender.sendto(b"\0", str(path))
                except OSError as exc:  # gone, or its queue is full: it has news already
                    if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.EAGAIN):
                        raise


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped yet, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _parse(data: bytes) -> Registry:
    raw = orjson.loads(data)
    models = {name: Entry(**entry) for name, entry in raw["models"].items()}
    return Registry(raw["generation"], models)


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` whole, atomically: readers see the old content or the new."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_bytes(data)
    temporary.replace(path)
