"""Multi-worker scaling: this server with one worker on one CPU against two workers on two
CPUs, for sizing instances.

    .venv/bin/python benchmarks/scaling.py --output docs/scaling.md

With one worker the server is pinned to CPU 0 and ``wrk`` (and the ``/ping`` probe) to CPU 1,
as in ``run.py``. With two workers the server has both CPUs (``serving serve`` starts a
worker per CPU it may use) and so does ``wrk``: the load generator shares the cores with the
server, which a real client would not, so the figure is a lower bound on what the second core
adds. The hand-written app (``byo_app.py``) runs the same two ways, with ``-w 1`` and
``-w 2``, for comparison.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import models  # noqa: E402
from run import CLIENT_CPU, JSON, NPY, SERVER_CPU, Load, keep_notes, measure, start  # noqa: E402

#: (model, request type, response type), at 64 clients.
CELLS = [("logreg", JSON, JSON), ("mlp", NPY, NPY), ("conv", NPY, NPY)]
CLIENTS = 64

#: Name of each way of running: (server CPUs, load generator CPUs, BYO workers).
SETUPS = {
    "1 worker, 1 CPU": ((SERVER_CPU,), (CLIENT_CPU,), 1),
    "2 workers, 2 CPUs": ((SERVER_CPU, CLIENT_CPU), (SERVER_CPU, CLIENT_CPU), 2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="measured seconds per cell")
    parser.add_argument("--output", type=Path, help="also write the results as Markdown here")
    arguments = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/scaling.py needs wrk: apt-get install wrk")
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("benchmarks/scaling.py needs two CPUs")

    work = Path(tempfile.mkdtemp(prefix="serving-scaling-"))
    rows = []
    for model, content_type, accept in CELLS:
        models.BUILDERS[model](work / model / "model.onnx")
        body_file = work / f"{model}.body"
        body_file.write_bytes(models.body(models.input_array(model), content_type))
        for server_name in ("this server", "hand-written BYO"):
            loads: dict[str, Load] = {}
            for setup, (server_cpus, client_cpus, byo_workers) in SETUPS.items():
                os.sched_setaffinity(0, set(client_cpus))  # the /ping probe's thread too
                log = work / f"{model}-{server_name.replace(' ', '-')}-{byo_workers}.log"
                with start(server_name, work / model, log, server_cpus, byo_workers) as server:
                    cell = (model, content_type, accept)
                    load = measure(server, cell, CLIENTS, body_file, arguments.seconds, client_cpus)
                loads[setup] = load
                print(f"{server_name} {model} {setup}: {load}", flush=True)
            rows.append((f"{model} {content_type}", server_name, loads))
    report = render(rows, arguments.seconds)
    print(report)
    if arguments.output:
        arguments.output.write_text(keep_notes(arguments.output, report))


def render(rows: list[tuple[str, str, dict[str, Load]]], seconds: int) -> str:
    one, two = SETUPS
    lines = [
        f"| cell ({CLIENTS} clients) | server | {one} | {two} | scaling |",
        "|---|---|---|---|---|",
    ]
    for cell, server_name, loads in rows:
        single, double = loads[one], loads[two]
        lines.append(
            f"| {cell} | {server_name} | {_cell(single)} | {_cell(double)} "
            f"| {double.requests_per_second / single.requests_per_second:.2f}x |"
        )
    lines.append(
        f"\nRequests per second (p99 ms); {seconds} s per cell after 2 s of warm-up, `wrk -t1`; "
        f"`/ping` p99 with 2 workers: "
        + ", ".join(
            f"{cell} {loads[two].ping_p99_ms:.1f} ms"
            for cell, name, loads in rows
            if name == "this server" and loads[two].ping_p99_ms is not None
        )
        + "."
    )
    return "\n".join(lines) + "\n"


def _cell(load: Load) -> str:
    errors = f", **{load.errors} errors**" if load.errors else ""
    return f"{load.requests_per_second:,.0f} ({load.p99_ms:.1f}{errors})"


if __name__ == "__main__":
    main()
