"""Probes: processes of their own that time a request every 20 ms while an attack runs
(so that the attack's threads do not delay their timings), and what they saw."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass

#: A probe, in a process of its own: a request every ``interval`` seconds until its stdin
#: closes, then each request's milliseconds and status (or exception name) as JSON.
PROBE = r"""
import http.client, json, select, sys, time
port, path, interval, timeout, fresh = sys.argv[1:]
port, interval, timeout, fresh = int(port), float(interval), float(timeout), fresh == "fresh"
body = b"[[5.1, 3.5, 1.4, 0.2]]" if path == "/invocations" else None
method, headers = ("POST", {"Content-Type": "application/json"}) if body else ("GET", {})
seen, connection = [], None
print("ready", flush=True)
while not select.select([sys.stdin], [], [], interval)[0]:
    started = time.perf_counter()
    try:
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        response.read()
        status = str(response.status)
        if fresh or response.will_close:
            connection.close()
            connection = None
    except (OSError, http.client.HTTPException) as exc:
        status = type(exc).__name__
        if connection is not None:
            connection.close()
        connection = None
    seen.append(((time.perf_counter() - started) * 1000, status))
print(json.dumps(seen))
"""


@dataclass
class Timings:
    """What a probe saw: latency of every request (failed ones too), and its statuses."""

    count: int
    failed: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    statuses: Counter[str]

    @classmethod
    def of(cls, seen: list[tuple[float, str]], ok: str = "200") -> Timings:
        ordered = sorted(ms for ms, _ in seen) or [math.nan]
        statuses = Counter(status for _, status in seen)
        return cls(
            count=len(seen),
            failed=len(seen) - statuses[ok],
            p50_ms=ordered[len(ordered) // 2],
            p99_ms=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            max_ms=ordered[-1],
            statuses=statuses,
        )

    def __str__(self) -> str:
        if not self.count:
            return "none sent"
        text = f"{self.p50_ms:.1f} / {self.p99_ms:.1f} / {self.max_ms:,.0f}"
        if self.failed:
            others = ", ".join(f"{s} ×{n}" for s, n in self.statuses.items() if s != "200")
            return f"{text} (**{self.failed} of {self.count} failed**: {others})"
        return f"{text} ({self.count} ok)"


class Probe:
    """A probe process (:data:`PROBE`), started at once; :meth:`stop` gives its timings."""

    def __init__(self, port: int, path: str, timeout: float, fresh: bool = False) -> None:
        arguments = [str(port), path, "0.02", str(timeout), "fresh" if fresh else "keep"]
        self.timeout = timeout
        self.process = subprocess.Popen(
            [sys.executable, "-c", PROBE, *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "ready"

    def stop(self) -> Timings:
        output, _ = self.process.communicate(b"", timeout=self.timeout + 10)
        return Timings.of([(ms, status) for ms, status in json.loads(output)])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
