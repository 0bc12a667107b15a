"""Hostile and broken clients, and broken user code, against a real server: one case per row
of issue 15's table, and a soak. Each case measures while its attack runs: the latency of
other clients' ``/invocations`` and of ``/ping``, the worker's memory, what the attacker got;
then it checks what must hold.

    .venv/bin/python benchmarks/reliability.py --quick          # CI-sized: seconds per case
    .venv/bin/python benchmarks/reliability.py --output docs/reliability.md
    .venv/bin/python benchmarks/reliability.py --only stalled-body zip-bomb

Each case starts its own server: one worker (two where the row says so), one inference thread,
on the tiny linear model of ``tests/models.py`` or on an ``inference.py`` of its own, pinned to
the first CPU while the attack and the probes keep to the others. ``/ping`` and the other
clients are probed from processes of their own, every 20 ms, so that the attack's threads here
do not delay their timings. docs/reliability.md says what each case checks. The exit status is
1 when a check failed.

The cases, and how they measure, are in ``attacks/`` (one module per theme); this script holds
their table and the command line.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from attacks.connections import idle_3000, idle_at_cap  # noqa: E402
from attacks.decoding import npz_rows, recordio_decode, zip_bomb_case  # noqa: E402
from attacks.framing import bad_chunk, stalled_body, stalled_chunked  # noqa: E402
from attacks.headers import header_values, hostile_accept  # noqa: E402
from attacks.hung_runs import cut_on_stop, hung_run, queued_runs, stuck_for_good  # noqa: E402
from attacks.outcome import Outcome, render  # noqa: E402
from attacks.servers import Work, raise_file_limit  # noqa: E402
from attacks.soak import soak  # noqa: E402
from attacks.start_and_stop import load_failure, stop_while_loading  # noqa: E402
from run import keep_notes  # noqa: E402

__all__ = ["CASES", "Outcome", "Work", "main", "raise_file_limit", "run_case"]

CaseFunction = Callable[[Outcome, bool, Work], None]

#: Each case: its row in the issue's table, and what runs it.
CASES: dict[str, tuple[str, CaseFunction]] = {
    "stalled-body": ("1", stalled_body),
    "stalled-chunked": ("1", stalled_chunked),
    "zip-bomb": ("2", zip_bomb_case),
    "recordio-decode": ("3", recordio_decode),
    "npz-rows": ("3", npz_rows),
    "hung-run": ("4", hung_run),
    "queued-runs": ("4", queued_runs),
    "stuck-for-good": ("4", stuck_for_good),
    "cut-on-stop": ("4", cut_on_stop),
    "idle-at-cap": ("5", idle_at_cap),
    "idle-3000": ("5", idle_3000),
    "bad-chunk": ("6", bad_chunk),
    "header-values": ("7", header_values),
    "hostile-accept": ("8", hostile_accept),
    "load-failure": ("9", load_failure),
    "stop-while-loading": ("10", stop_while_loading),
    "soak": ("soak", soak),
}


def run_case(name: str, quick: bool, work: Work) -> Outcome:
    """One case, timed; an exception is a failed check, with the figures gathered so far."""
    row, function = CASES[name]
    outcome = Outcome(name, row)
    started = time.monotonic()
    try:
        function(outcome, quick, work)
    except Exception as exc:  # noqa: BLE001 -- one broken case must not hide the others
        where = traceback.format_exc().strip().splitlines()[-3:]
        outcome.check("the case runs to its end", False, f"{exc!r} ({' | '.join(where)})")
    outcome.seconds = time.monotonic() - started
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized cases")
    parser.add_argument("--only", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--output", type=Path, help="also write the results as Markdown here")
    arguments = parser.parse_args()
    raise_file_limit(4000)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="serving-reliability-") as scratch:
        work = Work(Path(scratch))
        for name in arguments.only:
            outcome = run_case(name, arguments.quick, work)
            verdict = "pass" if outcome.passed else "FAIL"
            print(f"{name}: {verdict} in {outcome.seconds:.1f} s", file=sys.stderr, flush=True)
            outcomes.append(outcome)
    command = "python benchmarks/reliability.py" + " ".join(
        [""] + [a for a in sys.argv[1:] if a not in ("--output", str(arguments.output))]
    )
    report = render(outcomes, command)
    print(report)
    if arguments.output:
        arguments.output.write_text(keep_notes(arguments.output, report))
    sys.exit(0 if all(o.passed for o in outcomes) else 1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the servers on the way out
    main()
