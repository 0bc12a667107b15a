"""Rows 1 and 6 of issue 15's table: bodies that stop arriving, and malformed chunked
framing."""

from __future__ import annotations

import contextlib
import socket
import time

from .outcome import Outcome
from .raw_http import JSON, read_reply, request_bytes, summarize
from .servers import Work, default, serve
from .watching import check_others_prompt, watching


def body_timeout(quick: bool) -> tuple[float, dict[str, str]]:
    """The body timeout a case waits for, and the environment that sets it."""
    if quick:
        return 2.0, {"SERVING_BODY_TIMEOUT": "2"}
    return float(default("body_timeout", 10.0)), {}


def stalled_body(outcome: Outcome, quick: bool, work: Work) -> None:
    limit, environ = body_timeout(quick)
    outcome.attack = (
        f"`Content-Length: 6000000`, one body byte, then nothing (body timeout {limit:g} s)"
    )
    head = {"Content-Type": JSON, "Content-Length": "6000000"}
    with (
        serve(work, outcome.name, work.linear, environ=environ) as server,
        watching(server, outcome),
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as attacker,
    ):
        started = time.monotonic()
        attacker.sendall(request_bytes("POST", "/invocations", head) + b"[")
        reply = read_reply(attacker, limit + 3, started, close_wait=1.0)
    outcome.attacker = str(reply)
    outcome.check(
        f"the stalled body gets a 408 within {limit + 1:g} s and its connection is closed",
        reply.status == 408 and bool(reply.closed) and reply.seconds <= limit + 1,
        reply,
    )
    check_others_prompt(outcome)


def stalled_chunked(outcome: Outcome, quick: bool, work: Work) -> None:
    limit, environ = body_timeout(quick)
    outcome.attack = (
        f"five chunked bodies that announce a 1 MiB chunk, send 3 bytes of it, then nothing "
        f"(body timeout {limit:g} s)"
    )
    head = {"Content-Type": JSON, "Transfer-Encoding": "chunked"}
    with (
        serve(work, outcome.name, work.linear, environ=environ) as server,
        watching(server, outcome),
        contextlib.ExitStack() as stack,
    ):
        attackers = [
            stack.enter_context(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            for _ in range(5)
        ]
        started = time.monotonic()
        for attacker in attackers:
            attacker.sendall(request_bytes("POST", "/invocations", head) + b"100000\r\n[[1")
        replies = [read_reply(a, limit + 3, started, close_wait=0.5) for a in attackers]
    outcome.attacker = summarize(replies)
    outcome.check(
        f"each stalled body gets a 408 within {limit + 1:g} s and its connection is closed",
        all(r.status == 408 and r.closed and r.seconds <= limit + 1 for r in replies),
        "; ".join(sorted({str(r) for r in replies})),
    )
    check_others_prompt(outcome)


def bad_chunk(outcome: Outcome, quick: bool, work: Work) -> None:
    sizes = [b"zz", b"-5", b"5 5", b"0x5"]
    outcome.attack = f"chunked bodies with chunk sizes {', '.join(repr(s.decode()) for s in sizes)}"
    head = request_bytes(
        "POST", "/invocations", {"Content-Type": JSON, "Transfer-Encoding": "chunked"}
    )
    seen, held = [], True
    with serve(work, outcome.name, work.linear) as server, watching(server, outcome):
        for size in sizes:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                started = time.monotonic()
                sock.sendall(head + size + b"\r\n[[1, 2, 3, 4]]\r\n0\r\n\r\n")
                reply = read_reply(sock, 5, started, close_wait=1.0)
            says = reply.header("Connection")
            held = held and reply.status == 400 and says == "close" and bool(reply.closed)
            ending = "closed" if reply.closed else "left open"
            seen.append(f"{size.decode()!r}: {reply.status}, `Connection: {says}`, {ending}")
    outcome.attacker = "; ".join(seen)
    outcome.check(
        "each gets a 400 saying `Connection: close`, and the connection closes",
        held,
        outcome.attacker,
    )
