"""The benchmark's own pieces, so that it keeps working between the runs people make."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))

import models
import run
import spread

from tests.wire import run_onnxruntime

ROOT = Path(__file__).parent.parent

WRK_OUTPUT = """Running 4s test @ http://127.0.0.1:8199/invocations
  1 threads and 8 connections
  Latency Distribution
     50%  367.00us
     75%  410.00us
     90%    1.08ms
     99%   13.42ms
  10412 requests in 4.00s, 1.47MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   2602.86
"""


def test_wrk_output_is_read() -> None:
    assert run._latency(WRK_OUTPUT, "50%") == pytest.approx(0.367)
    assert run._latency(WRK_OUTPUT, "99%") == pytest.approx(13.42)
    assert run._errors(WRK_OUTPUT) == 7


def test_notes_above_the_results_are_kept(tmp_path: Path) -> None:
    output = tmp_path / "benchmarks.md"
    assert run.keep_notes(output, "table 1\n") == "table 1\n"
    output.write_text("# Results\n\nwhat it means\n\n## Latest run\n\ntable 1\n")
    kept = run.keep_notes(output, "table 2\n")
    assert kept == "# Results\n\nwhat it means\n\n## Latest run\n\ntable 2\n"


@pytest.mark.parametrize(("name", "classes"), [("logreg", 3), ("mlp", 10), ("conv", 10)])
def test_models_build_and_run(tmp_path: Path, name: str, classes: int) -> None:
    path = models.BUILDERS[name](tmp_path / "model.onnx")
    array = models.input_array(name)
    outputs = run_onnxruntime(path, {"x": array})
    (output,) = outputs.values()
    assert output.shape == (1, classes)
    assert np.isfinite(output).all()
    assert models.body(array, "application/json").startswith(b"[[")


def test_the_batch_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    """A small run of benchmarks/batch.py: a real server, the table, every row answered."""
    output = tmp_path / "batch.md"
    command = [sys.executable, "benchmarks/batch.py", "--rows", "2000", "--big-mb", "0"]
    command += ["--chunk-mb", "0.01", "--output", str(output)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=120)
    table = output.read_text()
    assert "| this server, 0.01 MiB chunks | 2,000 |" in table
    assert "| onnxruntime run on the array, in process | 2,000 |" in table


def test_the_scaling_report_gives_each_cell_its_ratio() -> None:
    import scaling

    one, two = scaling.SETUPS
    loads = {
        one: run.Load(1000.0, 1.0, 5.0, 0),
        two: run.Load(1800.0, 1.0, 6.0, 2, ping_p99_ms=3.0),
    }
    report = scaling.render([("mlp application/x-npy", "this server", loads)], 8)
    assert (
        "| mlp application/x-npy | this server | 1,000 (5.0) | 1,800 (6.0, **2 errors**) | 1.80x |"
        in report
    )
    assert "mlp application/x-npy 3.0 ms" in report


def test_the_app_overhead_benchmark_runs() -> None:
    """A small run of benchmarks/app_overhead.py: each row has its figures."""
    command = [sys.executable, "benchmarks/app_overhead.py", "--models", "logreg", "mlp"]
    command += ["--requests", "20", "--bodies", "3"]
    done = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, timeout=99)
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| logreg", "| mlp"))]
    assert len(rows) == 2
    assert all(row.count(" µs") == 4 for row in rows), rows


def test_the_endpoint_benchmark_runs_with_its_floor() -> None:
    """A small run of benchmarks/endpoint.py, the API and the asyncio byte pipe beside it:
    each forwards the requests (a failed one stops the script) and each row has its figures."""
    command = [sys.executable, "benchmarks/endpoint.py", "--requests", "80", "--rounds", "1"]
    command += ["--clients", "1", "--stacks", "asyncio byte pipe"]
    done = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, timeout=99)
    table = done.stdout.split("\n\n")[-1]
    rows = [line for line in table.splitlines() if line.startswith("| serving endpoint |")]
    rows += [line for line in table.splitlines() if line.startswith("| asyncio byte pipe |")]
    assert len(rows) == 4, table
    assert all(len(row.strip("|").split("|")) == 6 and "**" in row for row in rows), rows


def test_the_spread_counts_what_a_process_used() -> None:
    """``usage`` reads this process (its threads too) and grows as it works."""
    before = spread.usage(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    used = spread.usage(os.getpid()) - before
    assert used.user + used.system >= 20_000  # µs of the 50,000 spent: ticks are coarse


def test_the_spread_report_pairs_each_round() -> None:
    """Ratios are taken within a round; shares against that round's limit."""

    def sample(number: int, server: str, rate: float) -> spread.Sample:
        return spread.Sample(number, server, 8, rate, 1.0, spread.Usage(500.0, 200.0), 0)

    samples = [sample(0, spread.SERVERS[0], 1000), sample(0, spread.SERVERS[1], 500)]
    samples += [sample(1, spread.SERVERS[0], 1200), sample(1, spread.SERVERS[1], 800)]
    table = spread.report(samples, [2000.0, 2000.0], [8], spread.SERVERS)
    ours = next(line for line in table.splitlines() if line.startswith("| this server | 8 |"))
    assert "| 1,100 (1,000-1,200) |" in ours
    assert "| 55 (50-60)% |" in ours
    assert "| 1.75 (1.50-2.00)\N{MULTIPLICATION SIGN} |" in ours


def test_a_server_from_another_checkout_imports_its_code(tmp_path: Path) -> None:
    """``run.start(source=...)`` (``spread.py --against``) serves the checkout's code, not the
    installed one, wherever the benchmark is started from."""
    source = tmp_path / "checkout"
    for package in ("serving", "handlers"):
        shutil.copytree(ROOT / package, source / package)
    with (source / "serving" / "__init__.py").open("a") as init:
        init.write("\nimport sys\nsys.stderr.write('serving imported from the checkout\\n')\n")
    model_dir = tmp_path / "model"
    models.logistic_regression(model_dir / "model.onnx")
    log = tmp_path / "server.log"
    with run.start("this server", model_dir, log, source=source):
        pass
    assert "serving imported from the checkout" in log.read_text()


@pytest.mark.parametrize("with_head", [0, 65_000])
def test_the_receive_benchmark_gets_each_body_back(with_head: int) -> None:
    """benchmarks/receive.py checks each body it receives against the one sent."""
    command = [sys.executable, "benchmarks/receive.py", "--bodies", "20"]
    command += ["--with-head", str(with_head)]
    done = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, timeout=99)
    assert done.stdout.endswith(f"body ({with_head:,} with the head)\n"), done.stdout
