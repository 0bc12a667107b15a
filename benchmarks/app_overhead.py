"""What the app adds to a model run, in process: CPU per request through the WSGI app against
onnxruntime run alone on the same input.

    .venv/bin/python benchmarks/app_overhead.py                  # every model, a table
    .venv/bin/python benchmarks/app_overhead.py --models conv --profile   # and where it goes

No sockets, no event-loop wakeups, no other process: one request at a time is handed to the
app (``serving.app.create_app``, as a worker builds it) with a prepared WSGI environ, and the
answer read, in this process pinned to one CPU. So the figures say what the request path's
own code costs (decode, admission, the executor, encode, the app's glue), without the noise of
the machine's network and scheduling that ``benchmarks/run.py`` measures too. onnxruntime
alone is timed on the request's array kept hot in the cache, and on a fresh copy of the body
each time (as a server receives it). ``--bodies N``: the app's requests take N distinct
copies of the body in turn, as a server holding N bodies at once does (their memory then
leaves the CPU's caches between uses).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from werkzeug.test import EnvironBuilder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import models  # benchmarks/models.py

from serving.app import create_app, load_model
from serving.settings import Settings

NPY = "application/x-npy"


def cpu_per_call(function: Callable[[], Any], calls: int) -> float:
    """Microseconds of this process's CPU per call, after a tenth as many to warm up."""
    for _ in range(max(1, calls // 10)):
        function()
    started = time.process_time()
    for _ in range(calls):
        function()
    return (time.process_time() - started) / calls * 1e6


def request(model_dir: Path, body: bytes, bodies: int = 1) -> Callable[[], None]:
    """One ``POST /invocations`` of ``body`` through the app for ``model_dir``, as a call;
    each call takes the next of ``bodies`` distinct copies of it, as a server holding that
    many bodies at once does."""
    app = create_app(Settings.from_sources({}, {"model_dir": str(model_dir)}, cpus=1))
    load_model(app)
    headers = [("Content-Type", NPY), ("Accept", NPY)]
    template = EnvironBuilder(
        path="/invocations", method="POST", data=body, headers=headers
    ).get_environ()

    def start_response(status: str, headers: Any, info: Any = None) -> Callable[[bytes], object]:
        if not status.startswith("200"):
            raise RuntimeError(f"the app answered {status}")
        return lambda _data: None

    copies = [bytes(bytearray(body)) for _ in range(bodies)]
    turn = itertools.cycle(copies)

    def one() -> None:
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO(next(turn))
        for _chunk in app(environ, start_response):
            pass

    return one


def measure(name: str, work: Path, calls: int, bodies: int = 1) -> dict[str, float]:
    """CPU per request through the app and of onnxruntime alone, for model ``name``."""
    path = models.BUILDERS[name](work / name / "model.onnx")
    array = models.input_array(name)
    body = models.body(array, NPY)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    offset = len(body) - array.nbytes

    def fresh() -> None:
        copy = bytes(bytearray(body))
        session.run(
            None, {"x": np.frombuffer(copy, array.dtype, offset=offset).reshape(array.shape)}
        )

    return {
        "app": cpu_per_call(request(path.parent, body, bodies), calls),
        "run, hot input": cpu_per_call(lambda: session.run(None, {"x": array}), calls),
        "run, fresh body": cpu_per_call(fresh, calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(models.BUILDERS))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="also cProfile the app's path")
    parser.add_argument(
        "--bodies", type=int, default=1, help="distinct bodies the app's requests take in turn"
    )
    arguments = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    work = Path(tempfile.mkdtemp(prefix="app-overhead-"))
    print("| model (.npy in, .npy out) | the app | run, hot input | run, fresh body | app - run |")
    print("|---|---|---|---|---|")
    for name in arguments.models:
        cpu = measure(name, work, arguments.requests, arguments.bodies)
        print(
            f"| {name} | {cpu['app']:.0f} µs | {cpu['run, hot input']:.0f} µs "
            f"| {cpu['run, fresh body']:.0f} µs | {cpu['app'] - cpu['run, fresh body']:.0f} µs |",
            flush=True,
        )
        if arguments.profile:
            profile(request(work / name, models.body(models.input_array(name), NPY)), arguments)


def profile(one: Callable[[], None], arguments: argparse.Namespace) -> None:
    """cProfile of ``one`` called ``--requests`` times: the 20 functions with most own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(arguments.requests):
        one()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
