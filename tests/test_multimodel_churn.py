"""A minute of loads, invokes, unloads, lists and describes from many threads at once, against
a real server with two workers and a fresh connection for every call: no 5xx, every answer what
it should be, and the workers' memory and open files where they were once every model is
unloaded."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import requests

from tests import models
from tests.server import ServerProcess
from tests.test_multimodel import Client, expected, mme_server, worker_memory

SECONDS = 60.0
NAMES = [f"churn-{index}" for index in range(4)]
MIB = 1024 * 1024

#: Threads per kind of call.
THREADS = {"load": 2, "unload": 1, "invoke": 4, "describe": 1, "list": 1}


class Churn:
    """Each kind of call, and what is wrong with its answer (``None``: nothing)."""

    def __init__(self, client: Client, root: Path) -> None:
        self.client = client
        self.url = {name: str(root / "models" / name / "model") for name in NAMES}
        row = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
        self.want = expected(Path(self.url[NAMES[0]]) / "model.onnx", row)

    def call(self, kind: str, name: str) -> tuple[int, str | None]:
        """Make one call of ``kind`` on ``name``: its status and what is wrong with it."""
        client = self.client
        if kind == "load":
            answer = client.load(name, self.url[name])
        elif kind == "unload":
            answer = client("DELETE", f"/models/{name}")
        elif kind == "invoke":
            answer = client.invoke(name)
        elif kind == "describe":
            answer = client("GET", f"/models/{name}")
        else:
            answer = client("GET", "/models")
        check: Callable[[str, requests.Response], str | None] = getattr(self, kind)
        return answer.status_code, check(name, answer)

    def load(self, name: str, answer: requests.Response) -> str | None:
        if answer.status_code == 409:
            return self._error(answer, f"model {name!r} is already loaded")
        return self.describe(name, answer)

    def unload(self, name: str, answer: requests.Response) -> str | None:
        if answer.status_code == 404:
            return self._error(answer, f"model {name!r} is not loaded")
        unloaded = answer.status_code == 200 and answer.json() == {
            "status": f"model {name!r} unloaded"
        }
        return None if unloaded else f"{answer.status_code} {answer.text}"

    def invoke(self, name: str, answer: requests.Response) -> str | None:
        if answer.status_code == 404:
            return self._error(answer, f"model {name!r} is not loaded")
        if answer.status_code != 200:
            return f"{answer.status_code} {answer.text}"
        got = np.asarray(answer.json()["predictions"], dtype=np.float32)
        return None if np.allclose(got, self.want, rtol=1e-6) else f"predictions {got.tolist()}"

    def describe(self, name: str, answer: requests.Response) -> str | None:
        if answer.status_code == 404:
            return self._error(answer, f"model {name!r} is not loaded")
        if answer.status_code != 200:
            return f"{answer.status_code} {answer.text}"
        found = answer.json()
        right = (found["modelName"], found["modelUrl"]) == (name, self.url[name])
        return None if right else f"described as {found}"

    def list(self, name: str, answer: requests.Response) -> str | None:
        if answer.status_code != 200:
            return f"{answer.status_code} {answer.text}"
        names = [model["modelName"] for model in answer.json()["models"]]
        return None if names == sorted(set(names) & set(NAMES)) else f"listed {names}"

    @staticmethod
    def _error(answer: requests.Response, message: str) -> str | None:
        said = answer.json().get("error")
        return None if said == message else f"{answer.status_code} says {said!r}"


def _errors(log: str) -> str:
    """The server's error lines and tracebacks, for a failure's message."""
    lines = log.splitlines()
    found = [
        "\n".join(lines[index : index + 30])
        for index, line in enumerate(lines)
        if " ERROR [" in line and "gunicorn.access" not in line
    ]
    return "\n".join(found)[:8000] or "(no error in the log)"


def _open_files(server: ServerProcess) -> Counter[str]:
    """What the workers hold open, by name (``socket:[...]`` names counted as one kind)."""
    names = (
        os.readlink(fd) for pid in server.worker_pids() for fd in Path(f"/proc/{pid}/fd").iterdir()
    )
    return Counter("socket" if name.startswith("socket:") else name for name in names)


def _more_open_files(server: ServerProcess, before: Counter[str]) -> Counter[str]:
    """What the workers hold open beyond ``before``, given a few seconds to settle: every call
    has its own connection, and a worker closes its side only once it reads the client's end."""
    deadline = time.monotonic() + 5.0
    while True:
        more = _open_files(server) - before
        if not more or time.monotonic() > deadline:
            return more
        time.sleep(0.1)


def _churn(churn: Churn, seconds: float) -> tuple[Counter[tuple[str, int]], list[str]]:
    """Every kind of call from its :data:`THREADS` for ``seconds``, then every model unloaded:
    how many answers of each kind and status, and what was wrong with them."""
    statuses: Counter[tuple[str, int]] = Counter()
    problems: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def calls(kind: str, offset: int) -> None:
        for index in range(offset, 1 << 30):
            if time.monotonic() > deadline:
                return
            name = NAMES[index % len(NAMES)]
            try:
                status, problem = churn.call(kind, name)
            except Exception as exc:  # noqa: BLE001 - a dropped connection, a bad body
                status, problem = 0, repr(exc)
            with lock:
                statuses[kind, status] += 1
                if problem is not None:
                    problems.append(f"{kind} {name}: {problem}")

    threads = [
        threading.Thread(target=calls, args=(kind, offset))
        for kind, count in THREADS.items()
        for offset in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in NAMES:
        churn.call("unload", name)
    return statuses, problems


@pytest.mark.timeout(240)  # a minute of it, and the server's start and stop
def test_a_minute_of_concurrent_loads_invokes_and_unloads(tmp_path: Path) -> None:
    """Two halves of a minute: after the first, the workers have set up what they keep (about
    2 MB each, measured: pools, buffers, the allocator's arenas under concurrency); the second
    must leave them where the first did."""
    for name in NAMES:
        models.linear(tmp_path / "models" / name / "model" / "model.onnx")
    with mme_server(tmp_path, tmp_path / "server.log") as server:
        churn = Churn(Client(server), tmp_path)
        workers = sorted(server.worker_pids())
        for name in NAMES:  # each once first: what a first load and run set up is no leak
            for kind in ("load", "invoke", "invoke", "invoke", "unload"):
                assert churn.call(kind, name) == (200, None)
        start, files = worker_memory(server), _open_files(server)
        statuses, problems = _churn(churn, SECONDS / 2)
        half = worker_memory(server)
        more, later = _churn(churn, SECONDS / 2)
        statuses += more
        problems += later
        assert churn.client.names() == []
        end = worker_memory(server)
        opened = _more_open_files(server, files)
        assert not problems, f"{problems[:20]}\n{_errors(server.log())}"
        for kind in THREADS:
            assert statuses[kind, 200], statuses
        assert sorted(server.worker_pids()) == workers  # none died and was replaced
        assert not opened, f"more files open: {dict(opened)}"
        # Measured over 8 runs, both workers together: 3.2 to 4.2 MB up after the first half,
        # then -0.2 to +0.45 MB in each later half (or minute). A half is 1,300 loads or more,
        # each in both workers: keeping 2 KB a load and worker would be 5.2 MB (a leaked
        # session, hundreds of KB). On a machine with both CPUs busy elsewhere, a second half
        # grew 2.1 MB once: the bound leaves room for that.
        assert end - start < 16 * MIB, f"{(end - start) / MIB:.1f} MB more in all"
        assert end - half < 5 * MIB, f"{(end - half) / MIB:.1f} MB more in the second half"
