"""One cell over several rounds, both servers in each round, and what each server's CPU went to
per request: the spread of the ratio, and what makes a server's rate swing between runs.

    .venv/bin/python benchmarks/spread.py                      # conv .npy, 6 rounds
    .venv/bin/python benchmarks/spread.py --model mlp --rounds 4 --seconds 5
    .venv/bin/python benchmarks/spread.py --against /tmp/old   # this server at another commit

``--against DIR`` puts this server as imported from ``DIR`` (a ``git worktree`` of another
commit, say) in the hand-written app's place: an A/B of two versions of the request path.

Each round measures the in-process limit (decode + run + encode on a fresh body), then both
servers, in turn (which goes first alternates), at each client count, with ``benchmarks/run.py``'s
conditions: servers on CPU 0, ``wrk -t1`` on CPU 1. Around each measured ``wrk`` run it reads
the server's processes from ``/proc``: user and system CPU, context switches (voluntary: it
waited for something; involuntary: it was preempted) and the time it was runnable but not
running (``schedstat``), each per request, and the machine's steal time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import models  # noqa: E402
import run  # noqa: E402

from tests.server import children  # noqa: E402

SERVERS = ("this server", "hand-written BYO")
OURS = SERVERS[0]
TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")  # /proc/PID/stat counts in clock ticks


@dataclass
class Usage:
    """What a process tree used, summed: CPU in µs, page faults, context switches, µs
    runnable but waiting."""

    user: float = 0.0
    system: float = 0.0
    faults: float = 0.0
    voluntary: float = 0.0
    involuntary: float = 0.0
    waiting: float = 0.0

    def __sub__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f) - getattr(other, f) for f in self.__annotations__))


def usage(pid: int) -> Usage:
    total = Usage()
    for process in [pid, *children(pid)]:
        stat = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        total.user += int(stat[11]) * TICK_US
        total.system += int(stat[12]) * TICK_US
        total.faults += int(stat[7])  # minor: pages the kernel had to map (no disk read)
        for task in Path(f"/proc/{process}/task").iterdir():  # each thread: the pool's too
            status = (task / "status").read_text()
            total.voluntary += int(status.split("voluntary_ctxt_switches:")[1].split()[0])
            total.involuntary += int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
            total.waiting += int((task / "schedstat").read_text().split()[1]) / 1000
    return total


def steal_ticks() -> int:
    return int(Path("/proc/stat").read_text().split()[8])


@dataclass
class Sample:
    round: int
    server: str
    clients: int
    rate: float
    p99_ms: float
    per_request: Usage
    steal_ticks: int


def measure(
    server: run.Server,
    cell: tuple[str, str, str],
    clients: int,
    body: Path,
    seconds: int,
    number: int,
) -> Sample:
    _model, content_type, accept = cell
    run.wrk(server.port, body, content_type, accept, clients, 2)  # warm up
    before, steal = usage(server.process.pid), steal_ticks()
    load = run.wrk(server.port, body, content_type, accept, clients, seconds)
    used = usage(server.process.pid) - before
    requests = load.requests_per_second * seconds
    per = Usage(*(getattr(used, f) / requests for f in Usage.__annotations__))
    return Sample(
        number,
        server.name,
        clients,
        load.requests_per_second,
        load.p99_ms,
        per,
        steal_ticks() - steal,
    )


def spread(values: list[float], digits: int = 0) -> str:
    low, middle, high = min(values), statistics.median(values), max(values)
    return f"{middle:,.{digits}f} ({low:,.{digits}f}-{high:,.{digits}f})"


def report(
    samples: list[Sample], limits: list[float], clients: list[int], servers: tuple[str, str]
) -> str:
    lines = [
        "| server | clients | req/s | % of the limit | ratio | user µs | system µs | page faults "
        "| voluntary / involuntary switches | runnable waiting µs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for count in clients:
        ours = [s for s in samples if s.server == servers[0] and s.clients == count]
        other = [s for s in samples if s.server == servers[1] and s.clients == count]
        ratios = [a.rate / b.rate for a, b in zip(ours, other, strict=True)]
        for name, rows in ((servers[0], ours), (servers[1], other)):
            share = [100 * s.rate / limit for s, limit in zip(rows, limits, strict=True)]
            per = [s.per_request for s in rows]
            lines.append(
                f"| {name} | {count} | {spread([s.rate for s in rows])} | {spread(share)}% | "
                + (f"{spread(ratios, 2)}× | " if name == servers[0] else "| ")
                + f"{spread([p.user for p in per])} | {spread([p.system for p in per])} | "
                + f"{spread([p.faults for p in per], 1)} | "
                + f"{spread([p.voluntary for p in per], 2)} / "
                + f"{spread([p.involuntary for p in per], 2)} | "
                + f"{spread([p.waiting for p in per])} |"
            )
    lines.append("")
    lines.append(
        f"In-process limit (decode + run + encode, fresh body): {spread(limits)} /s. "
        "Each cell: median (lowest-highest) over the rounds."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="conv", choices=sorted(models.BUILDERS))
    parser.add_argument("--content-type", default=run.NPY)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=6, help="measured seconds per cell")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 64])
    parser.add_argument(
        "--against",
        type=Path,
        metavar="DIR",
        help="compare with this server as imported from DIR, instead of the hand-written app",
    )
    arguments = parser.parse_args()
    # Each server's label in the report: which server run.start starts, and from where.
    contenders: dict[str, tuple[str, Path | None]] = {OURS: (OURS, None)}
    if arguments.against is None:
        contenders[SERVERS[1]] = (SERVERS[1], None)
    else:
        contenders[f"{OURS} from {arguments.against}"] = (OURS, arguments.against.resolve())
    servers = (OURS, list(contenders)[1])
    cell = (arguments.model, arguments.content_type, arguments.content_type)
    work = Path(tempfile.mkdtemp(prefix="serving-spread-"))
    model_dir = work / arguments.model
    models.BUILDERS[arguments.model](model_dir / "model.onnx")
    array = models.input_array(arguments.model)
    body = models.body(array, arguments.content_type)
    body_file = work / "request.body"
    body_file.write_bytes(body)
    os.sched_setaffinity(0, {run.CLIENT_CPU})
    samples: list[Sample] = []
    limits: list[float] = []
    for number in range(arguments.rounds):
        rates = run.in_process(model_dir / "model.onnx", array, body, arguments.content_type, 2)
        limits.append(rates["limit, fresh body"])
        order = servers if number % 2 == 0 else servers[::-1]
        for label in order:
            log = work / f"{number}-{servers.index(label)}.log"
            kind, source = contenders[label]
            with run.start(kind, model_dir, log, source=source) as server:
                server.name = label
                for clients in arguments.clients:
                    sample = measure(server, cell, clients, body_file, arguments.seconds, number)
                    samples.append(sample)
                    per = sample.per_request
                    print(
                        f"round {number} {label} c={clients}: {sample.rate:,.0f}/s "
                        f"(limit {limits[-1]:,.0f}), p99 {sample.p99_ms:.1f} ms, "
                        f"user {per.user:.0f} system "
                        f"{per.system:.0f} µs, faults {per.faults:.1f}, "
                        f"switches {per.voluntary:.2f} / "
                        f"{per.involuntary:.2f}, waiting {per.waiting:.0f} µs, "
                        f"steal {sample.steal_ticks} ticks",
                        flush=True,
                    )
    samples.sort(key=lambda s: s.round)
    print()
    print(report(samples, limits, arguments.clients, servers))


if __name__ == "__main__":
    main()
