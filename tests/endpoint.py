"""A real ``serving endpoint`` process on a free loopback port, and boto3 clients for it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config

from tests.server import clean_environ, free_port, terminate

START_TIMEOUT = 60.0
READY = "InvokeEndpoint for "

#: The example iris model, and a row of it as CSV.
IRIS = Path(__file__).parent.parent / "examples" / "iris" / "model"
CSV = b"5.1,3.5,1.4,0.2\n"


#: Clients made, for :func:`close_clients` (an open keep-alive socket left to the garbage
#: collector is a ResourceWarning, an error in this suite).
_clients: list[Any] = []


def close_clients() -> None:
    while _clients:
        _clients.pop().close()


def client(port: int, **config: Any) -> Any:
    """boto3's own sagemaker-runtime client; only the URL and the (dummy) keys are ours."""
    made = boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="AKIDLOCALTEST",
        aws_secret_access_key="local-secret",  # noqa: S106 - a dummy
        config=Config(**config) if config else None,
    )
    _clients.append(made)
    return made


def invoke(runtime: Any, **arguments: Any) -> Any:
    """``invoke_endpoint``'s answer with its body read (so its connection goes back to the
    client's pool, as an application's does when it reads the answer)."""
    answer = runtime.invoke_endpoint(**arguments)
    answer["Body"] = answer["Body"].read()
    return answer


def no_retries(port: int) -> Any:
    """A client that surfaces a 5xx at once (botocore retries them by default)."""
    return client(port, retries={"total_max_attempts": 1})


class EndpointProcess:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def container_pids(self) -> list[int]:
        """The pids of the containers it started, as it logged them."""
        return [int(pid) for pid in re.findall(r"\(pid (\d+)\)\n", self.log())]

    def wait_for_log(self, pattern: str, count: int = 1, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, log := self.log())) < count:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"{pattern!r} not logged {count} times:\n{log}")
            time.sleep(0.05)
        return log

    def stop(self, timeout: float = 60.0) -> int:
        return terminate(self.process, timeout)


def launch(
    arguments: Sequence[str], log_path: Path, environ: Mapping[str, str] | None = None
) -> EndpointProcess:
    """``serving endpoint ARGUMENTS --port FREE``; containers it starts get one worker."""
    port = free_port()
    command = [sys.executable, "-m", "serving", "endpoint", *arguments, "--port", str(port)]
    defaults = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "SERVING_INFERENCE_THREADS": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_environ({**defaults, **(environ or {})}),
        )
    return EndpointProcess(process, port, log_path)


@contextmanager
def running_endpoint(
    arguments: Sequence[str], log_path: Path, environ: Mapping[str, str] | None = None
) -> Iterator[EndpointProcess]:
    """An endpoint serving the API (its containers healthy), stopped when the block ends."""
    endpoint = launch(arguments, log_path, environ)
    try:
        endpoint.wait_for_log(READY, timeout=START_TIMEOUT)
        yield endpoint
    finally:
        endpoint.stop()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_gone(pids: Sequence[int], timeout: float = 10.0) -> list[int]:
    """The pids still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if pid_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


class FakeMultiModelContainer:
    """A multi-model container on a free loopback port that does what it is told: records
    each load's body, loads slowly (``load_delay``), holds ``capacity`` models before it
    answers 507, answers a load with ``load_status`` when set, and forgets its models when
    ``restart()`` is called. An invoke answers ``{"model": NAME}``."""

    def __init__(self, capacity: int = 100, load_delay: float = 0.0) -> None:
        self.capacity = capacity
        self.load_delay = load_delay
        self.load_status: int | None = None
        self.loads: list[dict[str, str]] = []
        self.unloads: list[str] = []
        self.loaded: set[str] = set()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer(200, {})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == "/models":
                    request = json.loads(body)
                    with fake.lock:
                        fake.loads.append(request)
                    time.sleep(fake.load_delay)
                    with fake.lock:
                        name = request["model_name"]
                        if fake.load_status is not None:
                            self._answer(fake.load_status, {"error": "told to fail"})
                        elif name in fake.loaded:
                            self._answer(409, {"error": "already loaded"})
                        elif len(fake.loaded) >= fake.capacity:
                            self._answer(507, {"error": "no room"})
                        else:
                            fake.loaded.add(name)
                            self._answer(200, {})
                    return
                name = self.path.split("/")[2]
                with fake.lock:
                    if name in fake.loaded:
                        self._answer(200, {"model": name})
                    else:
                        self._answer(404, {"error": "not loaded"})

            def do_DELETE(self) -> None:
                name = self.path.split("/")[2]
                with fake.lock:
                    fake.unloads.append(name)
                    known = name in fake.loaded
                    fake.loaded.discard(name)
                self._answer(200 if known else 404, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever)

    def restart(self) -> None:
        with self.lock:
            self.loaded.clear()

    def __enter__(self) -> FakeMultiModelContainer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()
