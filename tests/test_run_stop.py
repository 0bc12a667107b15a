"""An onnxruntime run that its request gave up on (the timeout's 504) is stopped at its next
node, so it does not go on taking the CPU and the worker is never replaced for it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from serving.execution import MAX_ABANDONED_RUNS
from tests import models
from tests.server import running_server

JSON = {"Content-Type": "application/json"}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_runs_past_the_timeout_end_and_the_worker_serves_on(tmp_path: Path) -> None:
    model = models.slow(tmp_path / "slow" / "model.onnx")
    arguments = ["--model-dir", str(model.parent), "--timeout", "1"]
    with running_server(arguments, tmp_path / "server.log") as server:
        (worker,) = server.worker_pids()
        # More than the runs a worker may leave going before it is replaced; each would run
        # for hours (10^9 products of 0.05 ms).
        for _ in range(MAX_ABANDONED_RUNS + 1):
            response = server.post("/invocations", b"[[1e9]]", JSON)
            assert response.status_code == 504, response.text
        assert server.get("/ping").status_code == 200
        assert server.worker_pids() == [worker]
        time.sleep(0.2)  # the last one's stop reaches its next node
        before = cpu_seconds(worker)
        time.sleep(1)
        assert cpu_seconds(worker) - before < 0.3, "a run went on after its 504"

        response = server.post("/invocations", b"[[3]]", JSON)
        assert response.status_code == 200
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        (expected,) = session.run(None, {"x": np.array([[3]], np.float32)})
        np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-6)
