"""Rows 9 and 10 of issue 15's table: a model that cannot load, and a stop while a worker is
still loading."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

from tests.server import ServerProcess, launch, wait_until_healthy

from .outcome import Outcome
from .servers import Work, default


def load_failure(outcome: Outcome, quick: bool, work: Work) -> None:
    runs = 4 if quick else 12
    outcome.attack = f"`serving serve --workers 2` on a model that cannot load, {runs} times"
    model_dir = work.root / "broken"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "model.onnx").write_bytes(b"not a model")
    results = []
    for attempt in range(runs):
        log = work.log(f"{outcome.name}-{attempt}")
        process, _ = launch(["--model-dir", str(model_dir), "--workers", "2"], log)
        started = time.monotonic()
        try:
            returncode = process.wait(60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        text = log.read_text(errors="replace")
        results.append((returncode, time.monotonic() - started, text))
    codes = Counter(code for code, _, _ in results)
    naming = [sum("cannot load" in line for line in text.splitlines()) for *_, text in results]
    errors = [sum(" ERROR " in line for line in text.splitlines()) for *_, text in results]
    noisy = sum("Traceback" in text or "HaltServer" in text for *_, text in results)
    slowest = max(seconds for _, seconds, _ in results)
    outcome.attacker = (
        f"exit {', '.join(f'{c} ×{n}' for c, n in codes.items())}; lines naming the reason: "
        f"{min(naming)}-{max(naming)} (ERROR lines in all: {min(errors)}-{max(errors)}); "
        f"tracebacks: {noisy}; slowest exit {slowest:.1f} s"
    )
    outcome.check(
        "the same non-zero exit status every time",
        len(codes) == 1 and 0 not in codes,
        dict(codes),
    )
    outcome.check(
        "the reason on one clear line, no traceback, every time",
        noisy == 0 and min(naming) >= 1,
        f"{noisy} of {runs} runs logged a traceback or HaltServer",
    )


LOADER = """
    import os
    import time
    from pathlib import Path

    def model_fn(model_dir):
        # The first worker to get here loads slowly, the other at once.
        try:
            os.close(os.open(Path(model_dir) / "claimed", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return "loaded"
        (Path(model_dir) / "loading").touch()
        time.sleep(600)
        return "loaded"

    def transform_fn(model, input_data, content_type, accept):
        return input_data, "application/json"
"""


def stop_time(model_dir: Path, log: Path, graceful: int, slow: bool) -> tuple[float, int | None]:
    """Seconds from SIGTERM to exit for two workers, one still loading when ``slow``."""
    (model_dir / "loading").unlink(missing_ok=True)
    claimed = model_dir / "claimed"
    if slow:
        claimed.unlink(missing_ok=True)
    else:
        claimed.touch()
    arguments = [
        "--model-dir",
        str(model_dir),
        "--workers",
        "2",
        "--graceful-timeout",
        str(graceful),
    ]
    process, port = launch(arguments, log)
    server = ServerProcess(process, port, log)
    try:
        wait_until_healthy(server)
        deadline = time.monotonic() + 30
        while slow and not (model_dir / "loading").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        started = time.monotonic()
        try:
            returncode: int | None = server.stop(graceful + 20)
        except subprocess.TimeoutExpired:
            returncode = None
        return time.monotonic() - started, returncode
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def stop_while_loading(outcome: Outcome, quick: bool, work: Work) -> None:
    graceful = 5 if quick else int(default("graceful_timeout", 25))
    outcome.attack = (
        f"SIGTERM to a 2-worker server while one worker's `model_fn` sleeps (graceful timeout "
        f"{graceful} s), against the same server with both loaded"
    )
    model_dir = work.code("slow-loader", LOADER)
    idle, idle_code = stop_time(model_dir, work.log(f"{outcome.name}-idle"), graceful, False)
    took, code = stop_time(model_dir, work.log(outcome.name), graceful, True)
    outcome.attacker = (
        f"exit {code} after {took:.1f} s (idle server: exit {idle_code} after {idle:.1f} s)"
    )
    outcome.check(
        "the stop is as prompt as an idle server's (within 1.5 s of it), with its exit status",
        took < idle + 1.5 and code == idle_code,
        outcome.attacker,
    )
