"""Batch transform's MultiRecord requests: rows per second and the worker's peak memory for
one CSV body of many rows on the iris example model, side by side with onnxruntime run
directly on the same array (the limit), in one run.

    .venv/bin/python benchmarks/batch.py                          # prints the table
    .venv/bin/python benchmarks/batch.py --output docs/batch-benchmark.md

The server runs as a batch transform job starts it (``SAGEMAKER_BATCH=true``: 100 MiB body
limit), one worker pinned to CPU 0, onnxruntime with one intra-op thread; the client posts
from CPU 1. Each row is measured in a fresh server, so each peak memory is that body's alone.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from run import pin, wait_healthy  # noqa: E402

from serving.settings import Settings  # noqa: E402
from tests.server import children, free_port  # noqa: E402

SERVER_CPU, CLIENT_CPU = 0, 1
MODEL_DIR = ROOT / "examples" / "iris" / "model"
CSV = "text/csv"
DEFAULT_CHUNK_MB = Settings.record_chunk_mb


@dataclass
class Result:
    label: str
    rows: int
    body_mb: float
    seconds: float
    peak_rss_mb: float
    idle_rss_mb: float | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


def iris_rows(count: int) -> np.ndarray:
    """Plausible iris measurements (cm), two decimals, as people write them."""
    generator = np.random.default_rng(11)
    centre = np.array([5.8, 3.0, 3.8, 1.2])
    spread = np.array([0.8, 0.4, 1.8, 0.8])
    values = np.abs(generator.normal(centre, spread, size=(count, 4)))
    return np.round(values, 2).astype(np.float32)


def csv_body(rows: np.ndarray) -> bytes:
    return "".join("{:.2f},{:.2f},{:.2f},{:.2f}\n".format(*row) for row in rows.tolist()).encode()


def status_kb(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"{field}:\s+(\d+)", status)
    assert match, field
    return int(match.group(1))


def through_server(label: str, body: bytes, rows: int, chunk_mb: float, log: Path) -> Result:
    """POST ``body`` to a fresh server; the fastest of three posts, the worker's peak RSS."""
    port = free_port()
    command = [sys.executable, "-m", "serving", "serve", "--model-dir", str(MODEL_DIR)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--inference-threads", "1", "--record-chunk-mb", str(chunk_mb)]
    environ = {**os.environ, "SAGEMAKER_BATCH": "true", "SERVING_CODEC_PLUGINS": "none"}
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environ,
            preexec_fn=pin(SERVER_CPU),
        )
    try:
        wait_healthy(port, process)
        (worker,) = children(process.pid)
        idle = status_kb(worker, "VmRSS") / 1024
        times = []
        for _ in range(3):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            started = time.perf_counter()
            connection.request("POST", "/invocations", body, {"Content-Type": CSV, "Accept": CSV})
            response = connection.getresponse()
            answer = response.read()
            connection.close()
            times.append(time.perf_counter() - started)
            assert response.status == 200, answer[:300]
            assert answer.count(b"\n") == rows
        peak = status_kb(worker, "VmHWM") / 1024
    finally:
        process.terminate()
        process.wait(60)
    return Result(label, rows, len(body) / 2**20, min(times), peak, idle)


CODECS_IN_PROCESS = """
import sys, time, re
from pathlib import Path
from handlers import HandlerConfig, InvocationContext
from handlers.onnx_handler import OnnxHandler
body = Path(sys.argv[1]).read_bytes()
handler = OnnxHandler(HandlerConfig(model_dir=Path(sys.argv[2]).parent))
handler.load()
context = InvocationContext(content_type="text/csv", accept="text/csv")
best = min(
    (lambda t: (handler.invoke(body, context), time.perf_counter() - t)[1])(time.perf_counter())
    for _ in range(3)
)
status = open("/proc/self/status").read()
print(best, int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) / 1024)
"""

RUN_DIRECTLY = """
import sys, time, re, numpy as np, onnxruntime as ort
rows = np.load(sys.argv[1])
options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(sys.argv[2], options, providers=["CPUExecutionProvider"])
session.run(None, {"features": rows[:10]})
best = min(
    (lambda t: (session.run(None, {"features": rows}), time.perf_counter() - t)[1])(
        time.perf_counter())
    for _ in range(3)
)
status = open("/proc/self/status").read()
print(best, int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) / 1024)
"""


def in_process(label: str, script: str, data: Path, rows: int, body_mb: float) -> Result:
    """``script`` on ``data`` in its own pinned process (its peak RSS alone)."""
    output = subprocess.run(
        [sys.executable, "-c", script, str(data), str(MODEL_DIR / "model.onnx")],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        preexec_fn=pin(SERVER_CPU),
    ).stdout.split()
    return Result(label, rows, body_mb, float(output[0]), float(output[1]))


def render(results: list[Result], command: str) -> str:
    lines = [
        "# Batch transform benchmark",
        "",
        f"Command: `{command}` (server and onnxruntime pinned to CPU 0, client on CPU 1, one",
        "onnxruntime thread). A MultiRecord `text/csv` body of iris rows, answered `text/csv`",
        "(one line per row: three probabilities and the label); best of three posts to a fresh",
        "server started with `SAGEMAKER_BATCH=true`. Peak RSS is the worker's high-water mark",
        "(the master is another ~30 MB); for onnxruntime it is the whole process holding the",
        "array.",
        "",
        "| what | rows | body MB | seconds | rows/s | rows/s to the limit | idle / peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    limits = {r.rows: r for r in results if r.label.startswith("onnxruntime")}
    for r in results:
        limit = limits.get(r.rows)
        ratio = f"{r.rows_per_second / limit.rows_per_second:.4f}" if limit else "-"
        idle = f"{r.idle_rss_mb:.0f} / " if r.idle_rss_mb is not None else ""
        lines.append(
            f"| {r.label} | {r.rows:,} | {r.body_mb:.1f} | {r.seconds:.3f} | "
            f"{r.rows_per_second:,.0f} | {ratio} | {idle}{r.peak_rss_mb:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--big-mb", type=float, default=100.0, help="0 skips the big body")
    parser.add_argument("--chunk-mb", type=float, nargs="+", default=[0.0625, 0.25, 1.0, 4.0])
    parser.add_argument("--output", type=Path)
    arguments = parser.parse_args()
    os.sched_setaffinity(0, {CLIENT_CPU})

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "server.log"
        sizes = [arguments.rows]
        if arguments.big_mb:
            per_row = len(csv_body(iris_rows(1000))) / 1000
            sizes.append(int(arguments.big_mb * 2**20 * 0.99 / per_row))
        for count in sizes:
            rows = iris_rows(count)
            body = csv_body(rows)
            mb = len(body) / 2**20
            array, text = Path(scratch) / "rows.npy", Path(scratch) / "rows.csv"
            np.save(array, rows)
            text.write_bytes(body)
            label = "onnxruntime run on the array, in process"
            results.append(in_process(label, RUN_DIRECTLY, array, count, mb))
            label = "whole body through the handler (CSV codec + run), in process"
            results.append(in_process(label, CODECS_IN_PROCESS, text, count, mb))
            for chunk in arguments.chunk_mb if count == sizes[0] else [DEFAULT_CHUNK_MB]:
                label = f"this server, {chunk:g} MiB chunks"
                results.append(through_server(label, body, count, chunk, log))
                print(results[-1], file=sys.stderr)
    command = "python benchmarks/batch.py" + " ".join(
        [""] + [a for a in sys.argv[1:] if a not in ("--output", str(arguments.output))]
    )
    table = render(results, command.strip())
    print(table)
    if arguments.output:
        arguments.output.write_text(table)


if __name__ == "__main__":
    main()
