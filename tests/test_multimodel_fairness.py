"""A burst on one model of a multi-model endpoint queues behind that model alone: another
model's requests, and /ping, go on being answered (real server, two workers)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests import models
from tests.test_multimodel import Client, expected, mme_server

SLOW = """\
import time


def transform_fn(model, data, content_type, accept):
    time.sleep(0.25)
    return "slept"
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fair")
    models.linear(root / "models" / "fast" / "model.onnx")
    slow = root / "models" / "slow"
    models.linear(slow / "model.onnx")
    (slow / "code").mkdir()
    (slow / "code" / "inference.py").write_text(SLOW)
    return root


def test_one_models_burst_does_not_hold_up_another(base: Path) -> None:
    """48 requests to a model that takes 0.25 s each, two at a time per worker: 6 s of queue.
    The other model's requests meanwhile are answered in well under a second."""
    arguments = ("--max-active-requests", "2")
    with mme_server(base, base / "server.log", *arguments) as running:
        client = Client(running)
        for name in ("slow", "fast"):
            assert client.load(name, base / "models" / name).status_code == 200
        want = expected(base / "models" / "fast" / "model.onnx", np.ones((1, 4), np.float32))
        with ThreadPoolExecutor(48) as pool:
            started = time.monotonic()
            burst = [pool.submit(client.invoke, "slow") for _ in range(48)]
            time.sleep(1.0)  # the queue is long now
            took = []
            for _ in range(6):
                began = time.monotonic()
                answer = client.invoke("fast", b"[[1, 1, 1, 1]]")
                took.append(time.monotonic() - began)
                assert answer.status_code == 200
                np.testing.assert_allclose(answer.json()["predictions"], want, rtol=1e-6)
                pinged = time.monotonic()
                assert client("GET", "/ping").status_code == 200
                took.append(time.monotonic() - pinged)
            assert all(future.result().status_code == 200 for future in burst)
            queued = time.monotonic() - started
        assert queued > 4.0  # the burst was still queued while the others were answered
        assert max(took) < 1.0, took
