"""What runs in the executor's native threads (:mod:`serving.execution`): calls whose errors
come back as values, timed model runs, and the threads' lower priority.

Errors come back as values because gevent prints every exception that leaves a pool thread to
stderr, tracebacks and all, even though ``apply()`` re-raises it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any

from handlers.execution import Feeds, Runner, RunStop, stoppable
from handlers.tensors import Outputs

#: The niceness of the pool's threads: the event loop's thread (0) goes first. With the worker
#: on one CPU, a pool thread encoding a large answer kept the loop from answering /ping until
#: the kernel's next turn: /ping p99 10.7 ms at niceness 0, 7.9-8.7 ms at 10, two clients
#: posting 6 MB RecordIO bodies (``benchmarks/reliability.py --only recordio-decode``).
POOL_NICENESS = 10

#: A clock in seconds: ``time.perf_counter``, or a test's.
Clock = Callable[[], float]

#: Native ids of the threads already given :data:`POOL_NICENESS`.
_lowered: set[int] = set()


def _lower_priority() -> None:
    """Give the calling pool thread :data:`POOL_NICENESS` (once: Linux's niceness is per
    thread, and raising it needs no privilege)."""
    native_id = threading.get_native_id()
    if native_id not in _lowered:
        _lowered.add(native_id)
        with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed
            os.setpriority(os.PRIO_PROCESS, 0, POOL_NICENESS)


def captured(function: Callable[..., Any], *args: Any) -> tuple[Any, Exception | None]:
    """``function(*args)`` in a pool thread: its result, or the exception it raised."""
    _lower_priority()
    try:
        return function(*args), None
    except Exception as exc:  # noqa: BLE001 - re-raised by the caller, in its greenlet
        return None, exc


def stoppable_run(
    stop: RunStop, clock: Clock, runner: Runner, feeds: Feeds
) -> tuple[Outputs, Exception | None, float]:
    """A model run in a pool thread that ``stop`` can ask to end: see :func:`timed`."""
    _lower_priority()
    with stoppable(stop):
        return timed(clock, runner, feeds)


def timed(clock: Clock, runner: Runner, feeds: Feeds) -> tuple[Outputs, Exception | None, float]:
    """A model run: its outputs, or the exception it raised, and the seconds it took."""
    started = clock()
    try:
        outputs, error = runner(feeds), None
    except Exception as exc:  # noqa: BLE001 - re-raised by the caller, in its greenlet
        outputs, error = {}, exc
    return outputs, error, clock() - started
