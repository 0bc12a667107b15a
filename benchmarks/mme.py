"""Multi-model endpoints: load times, the first invoke after a load, throughput against
single-model mode, how many models fit in a budget, and /ping while models load or one model
is busy.

    .venv/bin/python benchmarks/mme.py                 # prints the report
    .venv/bin/python benchmarks/mme.py --output /tmp/mme.md   # and copied into docs/multi-model.md
    .venv/bin/python benchmarks/mme.py --burst 256 --seconds 5   # only one burst case

Needs ``wrk`` for the throughput rows (Debian: ``apt-get install wrk``). As in
``benchmarks/run.py``, servers are pinned to CPU 0 and the load generators and probes to CPU 1,
with one onnxruntime intra-op thread.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import models  # noqa: E402
from run import (  # noqa: E402
    CLIENT_CPU,
    NPY,
    SERVER_CPU,
    Load,
    PingProbe,
    pin,
    wait_healthy,
)
from run import wrk as run_wrk  # noqa: E402

from tests.server import free_port  # noqa: E402

KINDS = ("logreg", "mlp", "conv")
JSON = "application/json"


class Server:
    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process, self.port = process, port

    def call(
        self, method: str, path: str, body: bytes | None = None, content_type: str = JSON
    ) -> tuple[int, bytes, float]:
        """Status, body and milliseconds of one call on a fresh connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=400)
        started = time.perf_counter()
        headers = {"Content-Type": content_type, "Accept": content_type} if body else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        took = (time.perf_counter() - started) * 1000
        connection.close()
        return response.status, data, took

    def load(self, name: str, url: Path) -> tuple[int, float]:
        body = json.dumps({"model_name": name, "url": str(url)}).encode()
        status, _, took = self.call("POST", "/models", body)
        return status, took


@contextmanager
def serve(models_dir: Path, log: Path, *arguments: str, multi: bool = True) -> Iterator[Server]:
    port = free_port()
    command = [sys.executable, "-m", "serving", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--inference-threads", "1", *arguments]
    if multi:
        command += ["--multi-model", "--models-dir", str(models_dir)]
    environ = {**os.environ, "SERVING_CODEC_PLUGINS": "none"}
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=environ,
            preexec_fn=pin(SERVER_CPU),
        )  # fmt: skip
    try:
        wait_healthy(port, process)
        yield Server(process, port)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def wrk(
    port: int,
    body_file: Path,
    content_type: str,
    accept: str,
    clients: int,
    seconds: int,
    path: str,
) -> Load:
    """``benchmarks/run.py``'s wrk run, at ``path``."""
    return run_wrk(port, body_file, content_type, accept, clients, seconds, path=path)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def loads(root: Path, workers: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Per model kind: median ms of a load's answer, and of the first invoke after it."""
    found: dict[str, tuple[float, float]] = {}
    with serve(root / "models", root / "loads.log", "--workers", str(workers)) as server:
        for kind in KINDS:
            body = models.body(models.input_array(kind), NPY)
            load_ms, first_ms = [], []
            for index in range(rounds):
                status, took = server.load(f"{kind}-{index}", root / "models" / kind)
                assert status == 200, status
                load_ms.append(took)
                status, _, took = server.call("POST", f"/models/{kind}-{index}/invoke", body, NPY)
                assert status == 200, status
                first_ms.append(took)
                assert server.call("DELETE", f"/models/{kind}-{index}")[0] == 200
            found[kind] = (statistics.median(load_ms), statistics.median(first_ms))
    return found


def throughput(root: Path, kind: str, seconds: int, clients: int) -> tuple[Load, Load]:
    """One worker on one CPU: /invocations of a single-model server, then the same model's
    /models/<name>/invoke on a multi-model server."""
    body_file = root / f"{kind}.npy"
    body_file.write_bytes(models.body(models.input_array(kind), NPY))
    model_dir = root / "models" / kind
    results = []
    for multi in (False, True):
        arguments = (
            ["--workers", "1"] if multi else ["--workers", "1", "--model-dir", str(model_dir)]
        )
        log = root / f"throughput-{multi}.log"
        with serve(root / "models", log, *arguments, multi=multi) as server:
            path = "/invocations"
            if multi:
                assert server.load(kind, model_dir)[0] == 200
                path = f"/models/{kind}/invoke"
            wrk(server.port, body_file, NPY, NPY, clients, 2, path)  # warm up
            results.append(wrk(server.port, body_file, NPY, NPY, clients, seconds, path))
    return results[0], results[1]


def fit_in(root: Path, budget_mb: int, workers: int) -> tuple[int, float]:
    """How many MLP models load within ``budget_mb``, and the footprint (MB per worker)
    each reports."""
    log = root / "fit.log"
    arguments = ["--workers", str(workers), "--mme-memory-mb", str(budget_mb)]
    with serve(root / "models", log, *arguments) as server:
        count = 0
        while True:
            status, _ = server.load(f"mlp-{count}", root / "models" / "mlp")
            if status == 507:
                break
            assert status == 200, status
            count += 1
        _, data, _ = server.call("GET", "/models/mlp-0")
        return count, float(json.loads(data)["footprintMB"])


def pings_during_loads(root: Path, workers: int, count: int) -> tuple[float, float, int]:
    """/ping p50 and p99 (ms) while ``count`` MLP and conv models load one after another from
    two clients, and the pings answered."""
    with serve(root / "models", root / "ping-loads.log", "--workers", str(workers)) as server:
        probe = PingProbe(server.port)
        probe.start()

        def burst(kind: str) -> None:
            for index in range(count):
                assert server.load(f"{kind}-{index}", root / "models" / kind)[0] == 200

        threads = [threading.Thread(target=burst, args=(kind,)) for kind in ("mlp", "conv")]
        os.sched_setaffinity(0, {CLIENT_CPU})
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        probe.stopping.set()
        probe.join()
    latencies = probe.latencies
    return statistics.median(latencies), percentile(latencies, 0.99), len(latencies)


def during_a_burst(root: Path, seconds: int, clients: int) -> dict[str, float]:
    """One worker: wrk drives the conv model; meanwhile /ping and the logreg model are called
    one at a time. Their p50 and p99 (ms), and the same for logreg with no burst."""
    body_file = root / "conv.npy"
    body_file.write_bytes(models.body(models.input_array("conv"), NPY))
    small = models.body(models.input_array("logreg"), NPY)
    found: dict[str, float] = {}
    with serve(root / "models", root / "burst.log", "--workers", "1") as server:
        assert server.load("conv", root / "models" / "conv")[0] == 200
        assert server.load("logreg", root / "models" / "logreg")[0] == 200

        def small_calls(stop: threading.Event, into: list[float]) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            headers = {"Content-Type": NPY, "Accept": NPY}
            while not stop.wait(0.02):
                started = time.perf_counter()
                connection.request("POST", "/models/logreg/invoke", body=small, headers=headers)
                connection.getresponse().read()
                into.append((time.perf_counter() - started) * 1000)

        idle: list[float] = []
        stop = threading.Event()
        caller = threading.Thread(target=small_calls, args=(stop, idle))
        caller.start()
        time.sleep(2)
        stop.set()
        caller.join()
        busy: list[float] = []
        stop = threading.Event()
        caller = threading.Thread(target=small_calls, args=(stop, busy))
        probe = PingProbe(server.port)
        probe.start()
        caller.start()
        load = wrk(server.port, body_file, NPY, NPY, clients, seconds, "/models/conv/invoke")
        stop.set()
        caller.join()
        probe.stopping.set()
        probe.join()
    found["conv_rps"] = load.requests_per_second
    found["ping_p50"] = statistics.median(probe.latencies)
    found["ping_p99"] = percentile(probe.latencies, 0.99)
    found["other_idle_p50"] = statistics.median(idle)
    found["other_p50"] = statistics.median(busy)
    found["other_p99"] = percentile(busy, 0.99)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="write the report here too")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per throughput cell")
    parser.add_argument("--rounds", type=int, default=5, help="loads per model kind")
    parser.add_argument(
        "--burst", type=int, metavar="CLIENTS", help="only the burst case, with CLIENTS clients"
    )
    arguments = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/mme.py needs wrk: apt-get install wrk")
    os.sched_setaffinity(0, {CLIENT_CPU})
    root = Path(tempfile.mkdtemp(prefix="mme-bench-"))
    try:
        for kind in KINDS:
            models.BUILDERS[kind](root / "models" / kind / "model.onnx")
        if arguments.burst:
            lines = [burst_line(root, arguments.seconds, arguments.burst)]
        else:
            lines = report(root, arguments.seconds, arguments.rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if arguments.output:
        arguments.output.write_text(text)


def report(root: Path, seconds: int, rounds: int) -> list[str]:
    lines = ["| model | load (2 workers) | first invoke after it |", "|---|---|---|"]
    for kind, (load_ms, first_ms) in loads(root, 2, rounds).items():
        lines.append(f"| {kind} | {load_ms:.0f} ms | {first_ms:.1f} ms |")
    lines += ["", "| model, 1 worker on 1 CPU, 8 clients | /invocations | /models/<name>/invoke |"]
    lines.append("|---|---|---|")
    for kind in ("logreg", "mlp"):
        single, multi = throughput(root, kind, seconds, 8)
        ratio = multi.requests_per_second / single.requests_per_second
        lines.append(
            f"| {kind} | {single.requests_per_second:,.0f} req/s, p99 {single.p99_ms:.2f} ms "
            f"| {multi.requests_per_second:,.0f} req/s ({ratio:.0%}), p99 {multi.p99_ms:.2f} ms |"
        )
    count, footprint = fit_in(root, 1024, 2)
    size = (root / "models" / "mlp" / "model.onnx").stat().st_size / 2**20
    lines += [
        "",
        f"MLP models ({size:.1f} MB file) within `--mme-memory-mb 1024`, 2 workers: **{count}**"
        f" (footprint {footprint:.1f} MB per worker).",
    ]
    p50, p99, answered = pings_during_loads(root, 2, 40)
    lines.append(
        f"`/ping` while 80 models (40 MLP, 40 conv) load from two clients, 2 workers: "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms ({answered} pings)."
    )
    # 256 clients' 0.6 MB bodies are more than a worker's body memory (64 MiB) holds
    lines += [burst_line(root, seconds, clients) for clients in (8, 64, 256)]
    return lines


def burst_line(root: Path, seconds: int, clients: int) -> str:
    burst = during_a_burst(root, seconds, clients)
    return (
        f"During a burst on one model (conv, {clients} clients, "
        f"{burst['conv_rps']:,.0f} req/s, 1 worker): `/ping` p50 {burst['ping_p50']:.2f} ms, "
        f"p99 {burst['ping_p99']:.2f} ms; another model's (logreg) invokes p50 "
        f"{burst['other_p50']:.2f} ms, p99 {burst['other_p99']:.2f} ms (p50 "
        f"{burst['other_idle_p50']:.2f} ms without the burst)."
    )


if __name__ == "__main__":
    main()
