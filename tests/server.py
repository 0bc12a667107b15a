"""A real ``serving serve`` process on a free loopback port, for tests and examples."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import requests

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def clean_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any SAGEMAKER_ or SERVING_ setting, plus ``extra``."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SAGEMAKER_", "SERVING_"))
    }
    environ.update(extra or {})
    return environ


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (a server's master: its workers)."""
    tasks = Path(f"/proc/{pid}/task").glob("*/children")
    return [int(child) for listed in tasks for child in listed.read_text().split()]


class ServerProcess:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path
        self.session = requests.Session()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> requests.Response:
        return self.session.post(self.url(path), data=body, headers=dict(headers), timeout=30)

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.url(path), timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        """The log once it holds ``text`` (access lines are written out in blocks, later)."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged within {timeout} s")
            time.sleep(0.05)
        return log

    def worker_pids(self) -> list[int]:
        """The master's children: its workers."""
        return children(self.process.pid)

    def open_files(self) -> list[str]:
        """What the server's processes (master and workers) hold open, as /proc names them:
        paths, ``socket:[inode]``, a deleted file's path with `` (deleted)``."""
        pids = [self.process.pid, *self.worker_pids()]
        return [os.readlink(fd) for pid in pids for fd in Path(f"/proc/{pid}/fd").iterdir()]

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit status."""
        self.session.close()
        return terminate(self.process, timeout)


def terminate(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, then the exit status; past ``timeout``, SIGKILL and ``TimeoutExpired``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def launch(
    arguments: Sequence[str], log_path: Path, environ: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``serving serve`` with one worker on a free port (or on the one
    ``SAGEMAKER_BIND_TO_PORT`` in ``environ`` names); returns the process and port."""
    command = [sys.executable, "-m", "serving", "serve", "--host", "127.0.0.1"]
    if environ and "SAGEMAKER_BIND_TO_PORT" in environ:
        port = int(environ["SAGEMAKER_BIND_TO_PORT"])
    else:
        port = free_port()
        command += ["--port", str(port)]
    command += ["--workers", "1", "--inference-threads", "1", *arguments]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=clean_environ(environ)
        )
    return process, port


@contextmanager
def running_server(
    arguments: Sequence[str], log_path: Path, environ: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A server that answers ``/ping`` with 200, stopped (SIGTERM) when the block ends."""
    process, port = launch(arguments, log_path, environ)
    server = ServerProcess(process, port, log_path)
    try:
        wait_until_healthy(server)
        yield server
    finally:
        server.stop()


def wait_until_healthy(server: ServerProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if requests.get(server.url("/ping"), timeout=1).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or a loaded machine: a worker still starting is slow
        time.sleep(0.05)
    raise RuntimeError(f"server not healthy after {START_TIMEOUT} s:\n{server.log()}")
