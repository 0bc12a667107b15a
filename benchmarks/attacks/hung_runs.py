"""Row 4 of issue 15's table: user code that hangs, against the request timeout."""

from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager

from tests.server import ServerProcess

from .outcome import Outcome
from .raw_http import Reply, exchange, post_json, request_bytes, summarize
from .servers import Work, serve
from .watching import only_worker, watching

SLEEPER = """
    import json
    import time

    def model_fn(model_dir):
        return "sleeper"

    def input_fn(input_data, content_type):
        return json.loads(input_data)

    def predict_fn(data, model):
        if isinstance(data, dict):
            time.sleep(data.get("sleep", 0))
        return data

    def output_fn(prediction, accept):
        return json.dumps(prediction), "application/json"
"""


def request_timeout(quick: bool) -> int:
    return 2 if quick else 5


def serve_sleeper(work: Work, name: str, timeout: int) -> AbstractContextManager[ServerProcess]:
    """A server on :data:`SLEEPER` whose requests time out after ``timeout`` seconds."""
    model_dir = work.code("sleeper", SLEEPER)
    return serve(work, name, model_dir, "--timeout", str(timeout), "--graceful-timeout", "1")


def hung_run(outcome: Outcome, quick: bool, work: Work) -> None:
    timeout = request_timeout(quick)
    outcome.attack = (
        f"`predict_fn` sleeps for an hour (timeout {timeout} s); then three quick requests"
    )
    with (
        serve_sleeper(work, outcome.name, timeout) as server,
        watching(server, outcome, others=False),
    ):
        hang = post_json(server.port, {"sleep": 3600}, timeout + 10)
        later = [post_json(server.port, {"sleep": 0}, timeout + 5) for _ in range(3)]
    outcome.attacker = f"{hang}; later: {summarize(later)}"
    outcome.check(
        f"the hung request gets a 504 at the timeout (within {timeout + 1} s)",
        hang.status == 504 and hang.seconds <= timeout + 1,
        hang,
    )
    outcome.check(
        "later requests are answered 200, each within 1 s (the stuck run's slot is given back)",
        all(r.status == 200 and r.seconds < 1 for r in later),
        "; ".join(map(str, later)),
    )


def queued_runs(outcome: Outcome, quick: bool, work: Work) -> None:
    timeout = request_timeout(quick)
    sleep = 1.5 if quick else 4.0
    outcome.attack = (
        f"three requests at once, each running {sleep:g} s, one model run at a time "
        f"(timeout {timeout} s)"
    )
    replies: list[Reply] = []
    with (
        serve_sleeper(work, outcome.name, timeout) as server,
        watching(server, outcome, others=False),
    ):
        clients = [
            threading.Thread(
                target=lambda: replies.append(post_json(server.port, {"sleep": sleep}, 30))
            )
            for _ in range(3)
        ]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
    replies.sort(key=lambda r: r.seconds)
    seen = ", ".join(f"{r.status} at {r.seconds:.1f} s" for r in replies)
    outcome.attacker = seen
    outcome.check(
        f"answered 200 at ~{sleep:g} s, then 504, 504 at ~{timeout} s (the timeout covers "
        f"queueing and every hook)",
        [r.status for r in replies] == [200, 504, 504]
        and replies[0].seconds < sleep + 0.5
        and all(timeout - 0.5 < r.seconds < timeout + 0.75 for r in replies[1:]),
        seen,
    )


def ping_status(port: int) -> str:
    try:
        reply = exchange(port, request_bytes("GET", "/ping"), timeout=2)
    except OSError as exc:
        return type(exc).__name__
    return str(reply.status or "no answer")


def stuck_for_good(outcome: Outcome, quick: bool, work: Work) -> None:
    timeout, tries = request_timeout(quick), (3 if quick else 8)
    outcome.attack = (
        f"up to {tries} requests whose `predict_fn` never returns (timeout {timeout} s), each "
        f"followed by `/ping` and a quick request"
    )
    steps: list[str] = []
    honest, recovered = True, True
    with serve_sleeper(work, outcome.name, timeout) as server:
        first_worker = only_worker(server)
        for attempt in range(1, tries + 1):
            hang = post_json(server.port, {"sleep": 3600}, timeout + 10)
            ping = ping_status(server.port)
            quick_reply = post_json(server.port, {"sleep": 0}, timeout + 5)
            steps.append(
                f"{attempt}: hang {hang.status}, /ping {ping}, then a request {quick_reply.status}"
            )
            if ping == "200" and quick_reply.status != 200:
                honest = False  # /ping said this worker serves; it did not
                break
            if ping != "200":
                recovered = wait_recovered(server, 10.0 if quick else 60.0, steps)
                break
        outcome.check("`/ping` says 200 only while the worker can serve", honest, "; ".join(steps))
        final_ping = ping_status(server.port)
        final = post_json(server.port, {"sleep": 0}, timeout + 5)
        outcome.check(
            "in the end the worker serves again: `/ping` 200 and a request 200",
            recovered and final_ping == "200" and final.status == 200,
            f"/ping {final_ping}, request {final}; worker {first_worker} → {only_worker(server)}",
        )
    outcome.attacker = steps[-1] if steps else "-"


def wait_recovered(server: ServerProcess, seconds: float, steps: list[str]) -> bool:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if ping_status(server.port) == "200":
            steps.append(f"`/ping` 200 again after {time.monotonic() - started:.1f} s")
            return True
        time.sleep(0.1)
    steps.append(f"no `/ping` 200 within {seconds:g} s")
    return False


def cut_on_stop(outcome: Outcome, quick: bool, work: Work) -> None:
    graceful = 1 if quick else 3
    outcome.attack = (
        f"SIGTERM while a run that never ends is in flight (graceful timeout {graceful} s)"
    )
    model_dir = work.code("sleeper", SLEEPER)
    arguments = ["--graceful-timeout", str(graceful)]
    replies: list[Reply] = []
    with serve(work, outcome.name, model_dir, *arguments) as server:
        client = threading.Thread(
            target=lambda: replies.append(post_json(server.port, {"sleep": 3600}, graceful + 20))
        )
        client.start()
        time.sleep(0.5)
        started = time.monotonic()
        returncode = server.stop(timeout=graceful + 20)
        took = time.monotonic() - started
        client.join()
    log = server.log().partition("Handling signal: term")[2]
    errors = [line for line in log.splitlines() if " ERROR " in line]
    outcome.attacker = f"{replies[0]}; server exited {returncode} after {took:.1f} s"
    outcome.check(f"the server stops within {graceful + 2} s", took < graceful + 2, f"{took:.1f} s")
    outcome.check(
        "the cut request is logged at ERROR",
        bool(errors),
        errors[0][:200] if errors else "nothing at ERROR",
    )
