"""Throughput, tail latency, /ping under load and memory: this server against a hand-written
Flask+gunicorn+gevent baseline and onnxruntime called in-process, side by side in one run.

    .venv/bin/python benchmarks/run.py                 # prints the table
    .venv/bin/python benchmarks/run.py --output docs/benchmarks.md

Needs ``wrk`` (Debian: ``apt-get install wrk``). Servers are pinned to CPU 0, the load
generator (wrk, one thread) and the /ping probe to CPU 1; onnxruntime uses one intra-op
thread everywhere.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import models  # noqa: E402

from handlers.codecs import default_codecs  # noqa: E402
from tests.server import free_port  # noqa: E402

SERVER_CPU, CLIENT_CPU = 0, 1
JSON, NPY = "application/json", "application/x-npy"

#: (model, request type, response type) per row, as in the issue's table.
CELLS = [("logreg", JSON, JSON), ("mlp", NPY, NPY), ("conv", NPY, NPY), ("conv", JSON, JSON)]


@dataclass
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    ping_p50_ms: float | None = None
    ping_p99_ms: float | None = None
    ping_max_ms: float | None = None


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    started_in_s: float
    idle_rss_mb: float
    loads: dict[tuple[str, str, int], Load] = field(default_factory=dict)


def pin(*cpus: int) -> Callable[[], None]:
    return lambda: os.sched_setaffinity(0, set(cpus))


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (gunicorn's master and workers)."""
    pids, total = [pid], 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                pids.append(int(entry.name))
    for child in pids:
        try:
            status = (Path("/proc") / str(child) / "status").read_text()
        except OSError:
            continue
        total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return total / 1024


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.01)
    raise RuntimeError("server not healthy")


@contextmanager
def start(
    name: str,
    model_dir: Path,
    log: Path,
    cpus: tuple[int, ...] = (SERVER_CPU,),
    byo_workers: int = 1,
    source: Path | None = None,
) -> Iterator[Server]:
    """``name``'s server for the model in ``model_dir`` on ``cpus``: this one starts a worker
    per CPU it is given, the hand-written app ``byo_workers``. ``source``, for this server: a
    checkout whose ``serving`` and ``handlers`` are imported instead of the installed ones (an
    A/B against another commit)."""
    port = free_port()
    if name == "this server":
        command = [sys.executable, "-m", "serving", "serve", "--model-dir", str(model_dir)]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        # Without the example plugin the tests install here: a production image has none.
        environ = {**os.environ, "SERVING_CODEC_PLUGINS": "none"}
        if source is not None:
            environ["PYTHONPATH"] = str(source)
    else:
        # --http-parser python: a plain `pip install gunicorn` has no C parser (this venv does)
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gevent",
            "-w",
            str(byo_workers),
            "--http-parser",
            "python",
        ]
        command += ["-b", f"127.0.0.1:{port}", "--chdir", str(HERE), "byo_app:app"]
        environ = {**os.environ, "MODEL_PATH": str(model_dir / "model.onnx")}
    started = time.monotonic()
    with log.open("wb") as log_file:
        # From source's folder: `python -m` puts the working folder first on the path.
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=environ,
            preexec_fn=pin(*cpus), cwd=source,
        )  # fmt: skip
    try:
        wait_healthy(port, process)
        took = time.monotonic() - started
        time.sleep(0.5)
        yield Server(name, process, port, took, rss_mb(process.pid))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


class PingProbe(threading.Thread):
    """Pings every 20 ms on its own connection while the load runs; records latencies."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.latencies, self.stopping = port, list[float](), threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stopping.wait(0.02):
            started = time.perf_counter()
            connection.request("GET", "/ping")
            response = connection.getresponse()
            response.read()
            self.latencies.append((time.perf_counter() - started) * 1000)


def wrk(
    port: int,
    body_file: Path,
    content_type: str,
    accept: str,
    clients: int,
    seconds: int,
    cpus: tuple[int, ...] = (CLIENT_CPU,),
    path: str = "/invocations",
) -> Load:
    environ = {
        **os.environ,
        "BODY_FILE": str(body_file),
        "CONTENT_TYPE": content_type,
        "ACCEPT": accept,
    }
    command = ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    command += ["-s", str(HERE / "post.lua"), f"http://127.0.0.1:{port}{path}"]
    output = subprocess.run(
        command,
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=pin(*cpus),
    ).stdout
    return Load(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        p50_ms=_latency(output, "50%"),
        p99_ms=_latency(output, "99%"),
        errors=_errors(output),
    )


def _latency(output: str, percentile: str) -> float:
    value, unit = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", output, re.M).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _errors(output: str) -> int:
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        errors += sum(int(g) for g in match.groups())
    return errors


def measure(
    server: Server,
    cell: tuple[str, str, str],
    clients: int,
    body_file: Path,
    seconds: int,
    cpus: tuple[int, ...] = (CLIENT_CPU,),
) -> Load:
    """``wrk`` (and a ``/ping`` probe in this process) on ``cpus`` against ``server``."""
    _model, content_type, accept = cell
    wrk(server.port, body_file, content_type, accept, clients, 2, cpus)  # warm up
    probe = PingProbe(server.port)
    probe.start()
    load = wrk(server.port, body_file, content_type, accept, clients, seconds, cpus)
    probe.stopping.set()
    probe.join()
    if probe.latencies:
        ordered = sorted(probe.latencies)
        load.ping_p50_ms = statistics.median(ordered)
        load.ping_p99_ms = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        load.ping_max_ms = ordered[-1]
    return load


def in_process(
    model_path: Path, array: np.ndarray, body: bytes, content_type: str, seconds: float = 3
) -> dict[str, float]:
    """Requests per second of decode + run + encode with nothing else around (the limit)."""
    os.sched_setaffinity(0, {SERVER_CPU})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    codecs = default_codecs()
    decoder, encoder = codecs.decoder(content_type), codecs.encoder(content_type)
    assert decoder is not None
    assert encoder is not None

    def ours(data: bytes = body) -> None:
        outputs = session.run(None, {"x": np.asarray(decoder.decode(data), np.float32)})
        encoder.encode({"y": outputs[0]})

    def ours_fresh() -> None:
        # As a server has it: each body in memory just written (received into a fresh buffer,
        # then joined into bytes), not one body hot in the cache. On a conv net's 0.6 MB, the
        # run itself took 0.1 ms longer so.
        ours(bytes(bytearray(body)))

    def stdlib_json() -> None:
        outputs = session.run(None, {"x": np.array(json.loads(body), dtype=np.float32)})
        json.dumps({"predictions": outputs[0].tolist()})

    def run_only() -> None:
        session.run(None, {"x": array})

    rates = {
        "limit": _rate(ours, seconds),
        "limit, fresh body": _rate(ours_fresh, seconds),
        "run only": _rate(run_only, seconds),
    }
    if content_type == JSON:
        rates["json + np.array"] = _rate(stdlib_json, seconds)
        rates["decode only: orjson"] = _rate(lambda: decoder.decode(body), seconds)
        rates["decode only: json + np.array"] = _rate(
            lambda: np.array(json.loads(body), dtype=np.float32), seconds
        )
    os.sched_setaffinity(0, {CLIENT_CPU})
    return rates


def _rate(function: Callable[[], Any], seconds: float) -> float:
    function()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        function()
        count += 1
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="measured seconds per cell")
    parser.add_argument("--output", type=Path, help="also write the results as Markdown here")
    parser.add_argument("--only", nargs="*", default=[], help="models to run (default: all)")
    arguments = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/run.py needs wrk: apt-get install wrk")
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("benchmarks/run.py needs two CPUs: one for the servers, one for the load")
    os.sched_setaffinity(0, {CLIENT_CPU})

    work = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    results: dict[str, dict[str, Server]] = {}
    limits: dict[tuple[str, str], dict[str, float]] = {}
    for name in ("logreg", "mlp", "conv"):
        model_dir = work / name
        models.BUILDERS[name](model_dir / "model.onnx")
    for cell in CELLS:
        model, content_type, _accept = cell
        if arguments.only and model not in arguments.only:
            continue
        array = models.input_array(model)
        body = models.body(array, content_type)
        body_file = work / f"{model}-{content_type.split('/')[1]}.body"
        body_file.write_bytes(body)
        limits[(model, content_type)] = in_process(
            work / model / "model.onnx", array, body, content_type
        )
        for server_name in ("this server", "hand-written BYO"):
            log = work / f"{model}-{server_name.replace(' ', '-')}.log"
            with start(server_name, work / model, log) as server:
                for clients in (8, 64):
                    load = measure(server, cell, clients, body_file, arguments.seconds)
                    server.loads[(model, content_type, clients)] = load
                    print(f"{server_name} {model} {content_type} c={clients}: {load}", flush=True)
                results.setdefault(f"{model} {content_type}", {})[server_name] = server
    report = render(results, limits, arguments.seconds)
    print(report)
    if arguments.output:
        arguments.output.write_text(keep_notes(arguments.output, report))


#: In an output file, the heading the results go under; the notes above it are kept.
RESULTS_HEADING = "## Latest run\n\n"


def keep_notes(path: Path, report: str) -> str:
    """``report`` under the notes already written above :data:`RESULTS_HEADING` in ``path``."""
    text = path.read_text() if path.exists() else ""
    notes, found, _ = text.partition(RESULTS_HEADING)
    return notes + RESULTS_HEADING + report if found else report


def render(
    results: dict[str, dict[str, Server]],
    limits: dict[tuple[str, str], dict[str, float]],
    seconds: int,
) -> str:
    lines = [
        "| cell | clients | this server req/s (p50 / p99 ms) | BYO req/s (p50 / p99 ms) "
        "| ratio | /ping p99 (max) ms, this / BYO | errors this / BYO |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell_name, servers in results.items():
        ours, byo = servers["this server"], servers["hand-written BYO"]
        for key, load in ours.loads.items():
            base = byo.loads[key]
            ratio = load.requests_per_second / base.requests_per_second
            lines.append(
                f"| {cell_name} | {key[2]} | {_throughput(load)} | {_throughput(base)} "
                f"| **{ratio:.2f}×** | {_pings(load)} / {_pings(base)} "
                f"| {load.errors} / {base.errors} |"
            )
    lines += ["", "| cell | in-process (req/s) |", "|---|---|"]
    for (model, content_type), rates in limits.items():
        text = ", ".join(f"{name} {rate:,.0f}" for name, rate in rates.items())
        lines.append(f"| {model} {content_type} | {text} |")
    lines += ["", "| server | start to healthy (s) | idle RSS (MB) |", "|---|---|---|"]
    first_cell, first = next(iter(results.items()))
    for name, server in first.items():
        lines.append(
            f"| {name} ({first_cell} model) | {server.started_in_s:.2f} "
            f"| {server.idle_rss_mb:.0f} |"
        )
    lines.append(
        f"\n{seconds} s per cell after 2 s of warm-up; `wrk -t1` on CPU {CLIENT_CPU}, "
        f"servers on CPU {SERVER_CPU}."
    )
    return "\n".join(lines) + "\n"


def _throughput(load: Load) -> str:
    return f"{load.requests_per_second:,.0f} ({load.p50_ms:.1f} / {load.p99_ms:.1f})"


def _pings(load: Load) -> str:
    return f"{load.ping_p99_ms:.1f} ({load.ping_max_ms:.1f})"


if __name__ == "__main__":
    main()
