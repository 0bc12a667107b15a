"""The containers behind the variants: started as ``serving serve`` child processes on free
loopback ports (and started again when one dies, as SageMaker replaces a failed instance),
or already running at a URL.

A started container runs in a session of its own, so that a Ctrl-C in the terminal reaches
this command only, which then stops the containers in order; on Linux each is also told to
stop (``PR_SET_PDEATHSIG``) if this command dies without stopping it, so nothing is left
behind even after a SIGKILL. Its output goes to this command's stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

from .api import ACCOUNT, ServiceUnavailable
from .config import VariantConfig
from .replies import TimedOut, Unreachable
from .targets import ContainerModels, ModelsDir
from .upstream import Container

log = logging.getLogger("serving.endpoint")

#: Seconds between two /ping tries while a container starts.
PING_INTERVAL = 0.1
#: Seconds a started container gets to stop after SIGTERM (SageMaker: 30, then SIGKILL).
STOP_GRACE = 30.0
#: First and longest wait before starting again a container that died.
RESTART_DELAY = (1.0, 30.0)

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:  # in the child, between fork and exec
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class StartFailed(Exception):
    """A container did not become healthy; the message says why."""


class Variant:
    """A production variant and the container serving it (``None`` while it is unavailable)."""

    def __init__(self, endpoint: str, config: VariantConfig, start_timeout: float) -> None:
        self.endpoint = endpoint
        self.name = config.name
        self.weight = config.weight
        self.config = config
        self.start_timeout = start_timeout
        self.container: Container | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()
        #: A multi-model variant's models directory, and what its container has loaded.
        self.models_dir: ModelsDir | None = None
        if config.models_dir is not None:
            assert config.container_models_dir is not None
            self.models_dir = ModelsDir(config.models_dir, config.container_models_dir)
        self._models: ContainerModels | None = None

    def __str__(self) -> str:
        return f"variant {self.name} of endpoint {self.endpoint}"

    @property
    def log_stream(self) -> str:
        """Where this variant's container logs, shaped as the service's ARN: the stream is
        the pid of the container this command started (its output is on this command's
        stderr), or the container's address."""
        if self.process is not None:
            instance = f"pid-{self.process.pid}"
        else:
            instance = (self.config.container_url or "").removeprefix("http://")
        return (
            f"arn:aws:logs:local:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/"
            f"{self.endpoint}:log-stream:{self.name}/{instance}"
        )

    def unreachable(self, exc: Exception) -> ServiceUnavailable:
        """What the caller is told when this variant's container cannot be reached."""
        return ServiceUnavailable(
            f"The container of variant {self.name} of endpoint {self.endpoint} cannot be "
            f"reached ({exc}); try again."
        )

    def models(self, container: Container) -> ContainerModels:
        """What ``container`` has loaded (nothing, when it is a new one: a container that
        replaces one that died has lost the models its predecessor had)."""
        if self._models is None or self._models.container is not container:
            self._models = ContainerModels(container)
        return self._models

    async def start(self) -> None:
        """Start (or reach) the container and wait until it answers /ping with 200."""
        if self.config.container_url is not None:
            address = urlsplit(self.config.container_url)
            container = Container(address.hostname or "127.0.0.1", address.port or 80)
            log.info("%s: waiting for %s/ping", self, container.url)
            await self._wait_until_healthy(container)
            self.container = container
        else:
            await self._start_process()
            self._supervisor = asyncio.create_task(self._supervise())

    async def _start_process(self) -> None:
        port = free_port()
        command = [sys.executable, "-m", "serving", "serve"]
        if self.config.models_dir is not None:
            what = f"--multi-model --models-dir {self.config.models_dir}"
            command += ["--multi-model", "--models-dir", str(self.config.models_dir)]
        else:
            assert self.config.model_dir is not None
            what = f"--model-dir {self.config.model_dir}"
            command += ["--model-dir", str(self.config.model_dir)]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        self.process = await asyncio.create_subprocess_exec(
            *command,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.config.environment},
            start_new_session=True,
            preexec_fn=_die_with_parent,  # before exec: no lock is taken
        )
        log.info(
            "%s: started serving serve %s on 127.0.0.1:%d (pid %d)",
            self, what, port, self.process.pid,
        )  # fmt: skip
        container = Container("127.0.0.1", port)
        try:
            await self._wait_until_healthy(container)
        except StartFailed:
            await self._stop_process()
            raise
        self.container = container
        log.info("%s: the container (pid %d) answers /ping", self, self.process.pid)

    async def _wait_until_healthy(self, container: Container) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not self.stopping:
            if self.process is not None and self.process.returncode is not None:
                raise StartFailed(
                    f"{self}: the container exited with status {self.process.returncode} "
                    "before answering /ping (its log is above)"
                )
            try:
                reply = await container.request(
                    [f"GET /ping HTTP/1.1\r\nHost: {container.host}\r\n\r\n".encode()], 2.0
                )
                if reply.status == 200:
                    return
            except (Unreachable, TimedOut):
                pass
            if time.monotonic() > deadline:
                raise StartFailed(
                    f"{self}: {container.url}/ping did not answer 200 within "
                    f"{self.start_timeout:g} s"
                )
            await asyncio.sleep(PING_INTERVAL)
        raise StartFailed(f"{self}: stopping")

    async def _supervise(self) -> None:
        """Start the container again whenever it dies, until the endpoint stops."""
        delay = RESTART_DELAY[0]
        while True:
            assert self.process is not None
            status = await self.process.wait()
            if self.stopping:
                return
            if self.container is not None:
                self.container.close()
                self.container = None
            _kill_group(self.process.pid)  # its workers, if they outlived it
            log.error(
                "%s: the container (pid %d) exited with status %d; starting another",
                self, self.process.pid, status,
            )  # fmt: skip
            while not self.stopping:
                try:
                    await self._start_process()
                    delay = RESTART_DELAY[0]
                    break
                except StartFailed as exc:
                    if self.stopping:
                        return
                    log.error("%s; trying again in %g s", exc, delay)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop_requested.wait(), delay)
                    delay = min(delay * 2, RESTART_DELAY[1])

    async def _stop_process(self) -> None:
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE)
            except TimeoutError:
                log.error("%s: the container (pid %d) is still running after %g s; killing it",
                          self, process.pid, STOP_GRACE)  # fmt: skip
        _kill_group(process.pid)
        await process.wait()

    async def stop(self) -> None:
        """Stop the container if this command started it; nothing of it is left running,
        nor any archive extracted for it."""
        self.stopping = True
        self._stop_requested.set()
        if self.container is not None:
            self.container.close()
        await self._stop_process()
        if self._supervisor is not None:
            await self._supervisor  # prompt: a start under way sees `stopping` and stops
        await self._stop_process()
        if self.models_dir is not None:
            await self.models_dir.close()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
