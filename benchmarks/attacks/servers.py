"""The server a case attacks: a scratch folder for its models and logs, the server itself kept
apart from the attack on its own CPU, and the file limit thousands of connections need."""

from __future__ import annotations

import contextlib
import os
import resource
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from serving.settings import Settings
from tests import models
from tests.server import ServerProcess, running_server


def default(name: str, fallback: Any) -> Any:
    """A server setting's default, or ``fallback`` where this server has no such setting."""
    return getattr(Settings, name, fallback)


class Work:
    """A scratch folder: models, code folders and server logs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.linear = models.linear(root / "linear" / "model.onnx").parent

    def code(self, name: str, source: str) -> Path:
        """A model directory holding ``source`` as ``code/inference.py``."""
        model_dir = self.root / name
        (model_dir / "code").mkdir(parents=True, exist_ok=True)
        (model_dir / "code" / "inference.py").write_text(textwrap.dedent(source))
        return model_dir

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"


@contextlib.contextmanager
def serve(
    work: Work,
    name: str,
    model_dir: Path,
    *arguments: str,
    environ: Mapping[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """A healthy server, stopped when the block ends (``tests/server.py``: one worker, one
    inference thread, a free port, no SAGEMAKER_ or SERVING_ variable but ``environ``),
    pinned to one CPU while this process and what it starts keep to the others."""
    command = ["--model-dir", str(model_dir), *arguments]
    with running_server(command, work.log(name), environ) as server, apart(server):
        yield server


@contextlib.contextmanager
def apart(server: ServerProcess) -> Iterator[None]:
    """The server's processes and threads on the first CPU, this thread (and the threads and
    processes it starts) on the others, as ``run.py`` does: on two CPUs the probes and the
    attack would otherwise take turns with the server, and their timings would be the
    machine's, not the server's. Nothing changes on one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        yield
        return
    for pid in [server.process.pid, *server.worker_pids()]:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that has just ended
                os.sched_setaffinity(int(task.name), {cpus[0]})
    os.sched_setaffinity(0, cpus[1:])
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


def raise_file_limit(needed: int) -> int:
    """Raise this process's descriptor limit (servers started later inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return needed if soft == resource.RLIM_INFINITY else soft
