"""What a case found: its figures and checks (:class:`Outcome`), and the Markdown report of
a run."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

from .probes import Timings


@dataclass
class Check:
    what: str
    held: bool
    seen: str


@dataclass
class Outcome:
    """One case's figures and checks."""

    name: str
    row: str
    attack: str = ""
    attacker: str = "-"
    others: Timings | None = None
    ping: Timings | None = None
    idle_rss_mb: float | None = None
    peak_rss_mb: float | None = None
    seconds: float = 0.0
    checks: list[Check] = field(default_factory=list)

    def check(self, what: str, held: bool, seen: object) -> None:
        self.checks.append(Check(what, held, str(seen)))

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.held for check in self.checks)

    @property
    def growth_mb(self) -> float:
        if self.peak_rss_mb is None or self.idle_rss_mb is None:
            return math.nan
        return self.peak_rss_mb - self.idle_rss_mb

    def details(self) -> str:
        lines = [f"**{self.row} `{self.name}`** ({self.seconds:.0f} s): {self.attack}", ""]
        lines += [f"- {'✓' if c.held else '✗'} {c.what}: {c.seen}" for c in self.checks]
        return "\n".join(lines) + "\n"


def render(outcomes: list[Outcome], command: str) -> str:
    lines = [
        f"`{command}` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs. Latencies are "
        "p50 / p99 / max in ms; RSS is the worker's, at the start and its peak.",
        "",
        "| row | case | attacker got | other clients' `/invocations` | `/ping` "
        "| worker RSS MB | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        rss = "-"
        if o.idle_rss_mb is not None and o.peak_rss_mb is not None:
            rss = f"{o.idle_rss_mb:.0f} → {o.peak_rss_mb:.0f}"
        failed = [c.what for c in o.checks if not c.held]
        verdict = "pass" if o.passed else f"**FAIL** ({len(failed)} of {len(o.checks)})"
        lines.append(
            f"| {o.row} | `{o.name}` | {o.attacker} | {o.others or '-'} | {o.ping or '-'} "
            f"| {rss} | {verdict} |"
        )
    lines += ["", "### Case by case", ""]
    lines += [o.details() for o in outcomes]
    return "\n".join(lines)
