"""Rows 7 and 8 of issue 15's table: header values user code sets that must not reach the
wire, and ``Accept`` headers made to be costly."""

from __future__ import annotations

import itertools
import json
import random
import socket
import time
from collections import Counter
from collections.abc import Iterator

from .outcome import Outcome
from .probes import Probe, Timings
from .raw_http import JSON, SMALL, Reply, exchange, read_reply, request_bytes
from .servers import Work, serve
from .watching import QUICK_P99_FLOOR_MS, memory_mb, only_worker, watching

HEADER_SETTER = """
    import json

    CUSTOM = "X-Amzn-SageMaker-Custom-Attributes"

    def model_fn(model_dir):
        return None

    def transform_fn(model, input_data, content_type, accept, context):
        request = json.loads(input_data)
        if not isinstance(request, dict):
            return input_data, "application/json"
        if request["how"] == "set_response_header":
            context.set_response_header(0, CUSTOM, request["value"])
        else:
            context.custom_attributes = request["value"]
        return json.dumps({"ok": True}), "application/json"
"""

BAD_VALUES: dict[str, object] = {
    "NUL": "a\x00b",
    "ESC": "a\x1b[31mb",
    "DEL": "a\x7fb",
    "CR LF": "a\r\nX-Injected: 1",
    "a number": 12345,
}


def raw_bytes_in(head: bytes) -> bool:
    return any((byte < 32 and byte not in b"\r\n") or byte == 127 for byte in head) or (
        b"\nX-Injected" in head
    )


def clear_500(reply: Reply) -> bool:
    try:
        error = json.loads(reply.body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    names = ("transform_fn", "inference", "handler")
    return (
        reply.status == 500
        and isinstance(error, str)
        and any(name in error.lower() for name in names)
    )


def by_path(path: str, body: bytes) -> bytes:
    """A request that the server's own HTTP/1.1 loop serves, or one it hands to gunicorn."""
    if path.endswith("(HTTP/1.0)"):
        return request_bytes("POST", "/invocations", {"Content-Type": JSON}, body, "HTTP/1.0")
    if path.endswith("(chunked)"):
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        headers = {"Content-Type": JSON, "Transfer-Encoding": "chunked"}
        return request_bytes("POST", "/invocations", headers, chunked)
    return request_bytes("POST", "/invocations", {"Content-Type": JSON}, body)


def header_values(outcome: Outcome, quick: bool, work: Work) -> None:
    outcome.attack = (
        "`transform_fn` sets custom attributes holding NUL, ESC, DEL, CR LF or a number, "
        "through `set_response_header` and `context.custom_attributes`"
    )
    model_dir = work.code("header-setter", HEADER_SETTER)
    statuses: Counter[str] = Counter()
    with serve(work, outcome.name, model_dir) as server, watching(server, outcome):
        for path in ("HTTP/1.1 loop", "gunicorn (HTTP/1.0)", "gunicorn (chunked)"):
            wrong = []
            for label, value in BAD_VALUES.items():
                for how in ("set_response_header", "custom_attributes"):
                    body = json.dumps({"how": how, "value": value}).encode()
                    reply = exchange(server.port, by_path(path, body), timeout=10)
                    statuses[str(reply.status)] += 1
                    if raw_bytes_in(reply.head):
                        wrong.append(f"{label} via {how}: {reply.status} with raw bytes")
                    elif not clear_500(reply):
                        wrong.append(f"{label} via {how}: {reply}")
            outcome.check(
                f"{path}: a JSON 500 naming the handler, no raw bytes, for every value",
                not wrong,
                "; ".join(wrong[:4]) + (f" (and {len(wrong) - 4} more)" if len(wrong) > 4 else "")
                if wrong else f"all {2 * len(BAD_VALUES)} answered so",
            )  # fmt: skip
    outcome.attacker = ", ".join(f"{s} ×{n}" for s, n in statuses.items())


def hostile_accepts(size: int) -> Iterator[str]:
    """``Accept`` values of about ``size`` characters: distinct media types with q-values, JSON
    last; every one names types no earlier one did (no cache helps), and costs the client
    next to nothing to make."""
    rng, parts = random.Random(size), ["application/json;q=0.01"]
    while sum(len(part) + 2 for part in parts) + 34 < size:
        parts.append(f"application/x-TOKEN---{len(parts)};q=0.{rng.randint(1, 9)}")
    template = ", ".join(reversed(parts))
    for count in itertools.count():
        yield template.replace("TOKEN---", f"{count:08x}")


def sender(port: int, seconds: float, accepts: Iterator[str]) -> Timings:
    """One client on one keep-alive connection, posting for ``seconds``."""
    seen: list[tuple[float, str]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            data = request_bytes(
                "POST", "/invocations", {"Content-Type": JSON, "Accept": next(accepts)}, SMALL
            )
            started = time.monotonic()
            sock.sendall(data)
            reply = read_reply(sock, 10, started)
            seen.append((reply.seconds * 1000, str(reply.status)))
            if reply.status is None or reply.header("Connection") == "close":
                break
    return Timings.of(seen)


def hostile_accept(outcome: Outcome, quick: bool, work: Work) -> None:
    seconds = 1.5 if quick else 10.0
    sizes = {"8 KB": 8000, "1 KB": 1000}  # 1 KB: within SageMaker's own limit on Accept
    outcome.attack = (
        f"one client posting with a hostile `Accept` (distinct types, new every request) of "
        f"8 KB (~220 types), then of 1 KB (~30), {seconds:g} s each, after as long with a "
        f"plain one"
    )
    hostile: dict[str, Timings] = {}
    pings: dict[str, Timings] = {}
    with serve(work, outcome.name, work.linear) as server:
        worker = only_worker(server)
        outcome.idle_rss_mb = memory_mb(worker, "VmRSS")
        plain = sender(server.port, seconds, itertools.repeat(JSON))
        for name, size in sizes.items():
            probe = Probe(server.port, "/ping", timeout=2.0)
            try:
                hostile[name] = sender(server.port, seconds, hostile_accepts(size))
                pings[name] = probe.stop()
            finally:
                probe.close()
        outcome.peak_rss_mb = memory_mb(worker, "VmHWM")
    outcome.attacker = "; ".join(
        f"{name}: {t.count / seconds:,.0f} requests/s, "
        f"{', '.join(f'{s} ×{n:,}' for s, n in t.statuses.items())}"
        for name, t in [*hostile.items(), ("plain", plain)]
    )
    outcome.check(
        "a hostile `Accept` costs under 2 ms more than a plain one (p50)",
        all(t.p50_ms - plain.p50_ms < 2 for t in hostile.values()),
        ", ".join(f"{name} {t.p50_ms:.2f} ms" for name, t in hostile.items())
        + f" against {plain.p50_ms:.2f} ms",
    )
    outcome.ping = max(pings.values(), key=lambda timings: timings.p99_ms)
    bound = max(10.0, QUICK_P99_FLOOR_MS) if quick else 10.0
    outcome.check(
        f"`/ping` never fails and its p99 is under {bound:g} ms",
        all(not t.failed and t.p99_ms < bound for t in pings.values()),
        "; ".join(f"with {name}: {t}" for name, t in pings.items()),
    )
