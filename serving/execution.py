"""Model runs for a gevent worker: inline or in native threads, with adaptive micro-batching.

**Where a run happens.** A short run is cheaper on the worker's event loop than the hand-off
to a thread (about 0.1 ms both ways), and blocks the loop only briefly. A long one goes to a
gevent native thread pool: onnxruntime releases the GIL inside ``InferenceSession.run``, so the
event loop stays free for ``/ping`` and for parsing the next requests. The executor keeps a
running estimate of each model's time per row and runs inline what it expects to finish within
``inline_limit`` seconds. At most ``concurrency`` runs are in flight per worker.

**Batching** (models with a free first dimension). Requests queue per model; a dispatcher waits
until the event loop is idle, so that every request already received can join (and ``/ping``
is answered first), then takes the oldest request and every compatible one queued after it
(same names, dtypes and shapes past the first axis) up to ``max_batch_rows`` rows, runs them
as one, and splits the outputs back by row counts. An idle server runs each request alone with
no added delay; a loaded one batches as much as the load gives. ``max_delay`` (off by default)
holds a partial batch back to gather more. Batching stops for models that a busy worker serves
no faster in batches than one by one, measured as it serves them
(:meth:`serving.lanes.Lane.batch_rows`).

**Fairness.** Waiting for the idle loop before each run also keeps the loop polling: run back
to back, inline runs would keep ``/ping`` and new connections waiting. Models that cannot
batch wait for it too, unless their runs are tiny (``YIELD_ABOVE``).

No request sees another's rows or errors: if a shared run fails, or its outputs do not line up
with its inputs, each member is run again alone.

**Timeouts.** The executor sets none of its own: the app bounds the whole request
(:mod:`serving.deadline`) and the wait for a run ends when the request's time is up. A run in
a thread is then *abandoned*: it is asked to stop (:class:`handlers.execution.RunStop`, which
onnxruntime runs honour at their next node; user code cannot be stopped), its thread goes on
until it ends, and a new one takes its slot so that later requests still run. A worker with
:data:`MAX_ABANDONED_RUNS` abandoned runs still going takes no more threads: it cannot serve,
says so on ``/ping`` (:attr:`GeventExecutor.can_serve`) and asks to be replaced
(``on_exhausted``). A shared run abandoned at one request's timeout fails the others that
joined it with a 504 too.

**Threads.** Pool threads run at a lower priority than the event loop
(:data:`serving.pool_threads.POOL_NICENESS`), so that on a busy CPU the loop goes first.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import gevent
import numpy as np
from gevent.event import AsyncResult
from gevent.threadpool import ThreadPool

from handlers.execution import Feeds, Runner, RunStop, T
from handlers.tensors import Outputs

from .deadline import RequestTimeout
from .lanes import Lane, Request, key_of, rows_of
from .pool_threads import Clock, captured, stoppable_run, timed

#: A run of a model that cannot batch, expected to take longer than this (seconds), first
#: waits for the event loop to be idle, as batches do.
YIELD_ABOVE = 50e-6

#: Abandoned runs still going at which a worker stops taking new threads and asks to be
#: replaced: each may hold a thread, memory and CPU for good (a hook that never returns).
MAX_ABANDONED_RUNS = 3

#: The 504 of requests whose shared run was abandoned at another's timeout.
ABANDONED_SHARED_RUN = "the model run this request shared was abandoned when another timed out"

log = logging.getLogger(__name__)


class GeventExecutor:
    """Runs model calls inline or in a native thread pool; batches concurrent ones.

    Built in the server's master but used in workers only: the thread pool is created on first
    use, after fork and after gevent has patched the worker. Everything but the model call
    runs in the worker's event loop, so the queues need no locks.
    """

    def __init__(
        self,
        concurrency: int,
        max_batch_rows: int,
        max_delay: float = 0.0,
        inline_limit: float = 0.001,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.concurrency = concurrency
        self.max_batch_rows = max_batch_rows
        self.max_delay = max_delay
        self.inline_limit = inline_limit
        #: What run times are measured with (a test's clock makes them exact).
        self.clock = clock
        self._pool: ThreadPool | None = None
        self._lanes: dict[Runner, Lane] = {}
        #: Runs abandoned at their request's timeout that have not ended yet.
        self.abandoned = 0
        #: Called once the worker cannot serve any more (the server stops the worker then).
        self.on_exhausted: Callable[[], None] | None = None

    @property
    def can_serve(self) -> bool:
        """Whether runs can still start: fewer than :data:`MAX_ABANDONED_RUNS` are stuck."""
        return self.abandoned < MAX_ABANDONED_RUNS

    def run(self, runner: Runner, feeds: Feeds, *, batchable: bool) -> Outputs:
        lane = self._lanes.setdefault(runner, Lane())
        rows = rows_of(feeds)
        if not batchable or self.max_batch_rows <= 1:
            if not 0 < lane.alone.per_row * rows < YIELD_ABOVE:
                gevent.idle()  # let /ping and requests already received go first
            return self._execute(runner, lane, feeds, rows)
        request = Request(feeds, rows, key_of(feeds))
        lane.pending.append(request)
        try:
            if lane.dispatchers < self.concurrency:  # the turn is this request's at once
                lane.dispatchers += 1
                self._dispatch(runner, lane)
            while not request.result.ready():
                gevent.wait([request.result, request.turn], count=1)
                if request.result.ready():
                    break
                request.turn.clear()
                self._dispatch(runner, lane)
        finally:
            self._leave(lane, request)
        outputs: Outputs = request.result.get()
        return outputs

    def _leave(self, lane: Lane, request: Request) -> None:
        """Forget a request that is done or gave up; pass on a turn it will not take."""
        if request in lane.pending:
            lane.pending.remove(request)
        if request.turn.is_set():
            request.turn.clear()
            self._hand_off(lane)

    def _hand_off(self, lane: Lane) -> None:
        """Give the dispatcher's turn to the oldest waiting request, or end the turn."""
        for waiting in lane.pending:
            if not waiting.turn.is_set():
                waiting.turn.set()
                return
        lane.dispatchers -= 1

    def _wait(self, done: AsyncResult, stop: RunStop | None = None) -> Any:
        """The result of a run in a pool thread; if the wait ends first (the request's
        timeout), the run is abandoned, and asked to ``stop`` if it can be."""
        try:
            return done.get()
        except BaseException:
            if not done.ready():
                if stop is not None:
                    stop.request()
                self._abandon(done)
            raise

    def _abandon(self, done: AsyncResult) -> None:
        """Give a stuck run's slot to a new thread, until too many are stuck."""
        self.abandoned += 1
        log.error(
            "a run goes on after its request ended (timed out, or cut by a stop): abandoned, "
            "%d still going",
            self.abandoned,
        )
        if self.can_serve:
            pool = self._threads()
            pool.maxsize += 1
            done.rawlink(lambda _: self._abandoned_ended(pool))
            return
        log.error("%d runs are stuck: this worker cannot serve; replacing it", self.abandoned)
        if self.on_exhausted is not None:
            self.on_exhausted()
        done.rawlink(lambda _: self._abandoned_ended(None))

    def _abandoned_ended(self, pool: ThreadPool | None) -> None:
        """An abandoned run ended: its extra thread (if it was given one) is not needed."""
        self.abandoned -= 1
        if pool is not None:
            pool.maxsize -= 1

    def _execute(
        self,
        runner: Runner,
        lane: Lane,
        feeds: Feeds,
        rows: int,
        together: bool = False,
    ) -> Outputs:
        """One run, inline if it should be short, else in a pool thread; updates the run's
        estimate (lone or batched) with the time it took."""
        estimate = lane.together if together else lane.alone
        per_row = estimate.per_row or lane.alone.per_row
        # Unmeasured models run in a thread first: a slow first run must not stall the loop.
        inline = 0 < per_row * rows < self.inline_limit
        if inline:
            outputs, error, seconds = timed(self.clock, runner, feeds)
        else:
            stop = RunStop()
            done = self._threads().spawn(stoppable_run, stop, self.clock, runner, feeds)
            outputs, error, seconds = self._wait(done, stop)
        if error is not None:
            raise error
        estimate.update(seconds, rows)
        return outputs

    def forget(self, owners: set[int]) -> None:
        """Drop the idle lanes of runners bound to an object whose ``id`` is in ``owners``: a
        lane holds its runner, and through it the model (an unloaded one, in a multi-model
        server)."""
        for runner, lane in list(self._lanes.items()):
            if id(getattr(runner, "__self__", None)) in owners and not lane.pending:
                del self._lanes[runner]

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a pool thread, within the timeout. Pure Python holds the GIL
        there too, but gives it up every few milliseconds, so the loop still answers /ping."""
        outcome, error = self._wait(self._threads().spawn(captured, function, *args))
        if error is not None:
            raise error
        return outcome  # type: ignore[no-any-return]

    def _threads(self) -> ThreadPool:
        if self._pool is None:
            self._pool = ThreadPool(self.concurrency)
        return self._pool

    def _dispatch(self, runner: Runner, lane: Lane) -> None:
        """Run one batch from the queue in the calling request's greenlet (no extra
        greenlets), then pass the turn to the oldest request still waiting, if any.

        The calling request is queued too: another dispatcher may already have run it, or a
        full batch of older requests may leave it out, in which case it waits like the others.
        """
        try:
            # Wait until the loop has nothing else to do: every request already received has
            # been read and queued (and /ping answered) before the batch is taken.
            gevent.idle()
            if self.max_delay > 0 and sum(r.rows for r in lane.pending) < self.max_batch_rows:
                gevent.sleep(self.max_delay)
            if lane.pending:
                self._run_batch(runner, lane, self._take(lane))
        finally:
            self._hand_off(lane)

    def _take(self, lane: Lane) -> list[Request]:
        """The oldest request and the compatible ones queued after it, up to the row limit
        (or the oldest alone, while batching does not pay)."""
        first = lane.pending.popleft()
        limit = lane.batch_rows(self.max_batch_rows)
        batch, rows, kept = [first], first.rows, deque[Request]()
        while lane.pending and rows < limit:
            request = lane.pending.popleft()
            if request.key == first.key and rows + request.rows <= limit:
                batch.append(request)
                rows += request.rows
            else:
                kept.append(request)
        lane.pending.extendleft(reversed(kept))
        lane.taken(self.clock(), rows, len(batch) > 1, bool(lane.pending))
        return batch

    def _run_batch(self, runner: Runner, lane: Lane, batch: list[Request]) -> None:
        """Run ``batch``; every request in it gets its outputs or its error, whatever happens."""
        try:
            if len(batch) > 1 and self._run_together(runner, lane, batch):
                return
            for request in batch:
                try:
                    request.result.set(self._execute(runner, lane, request.feeds, request.rows))
                except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                    request.result.set_exception(exc)
        except BaseException as exc:  # never leave a request waiting forever
            # The dispatching request's own timeout (or its greenlet's end) abandons the run
            # it shares: the others get a 504 rather than the dispatcher's exception.
            shared = exc if isinstance(exc, Exception) else RequestTimeout(ABANDONED_SHARED_RUN)
            for request in batch:
                if not request.result.ready():
                    request.result.set_exception(shared)
            raise

    def _run_together(self, runner: Runner, lane: Lane, batch: list[Request]) -> bool:
        """One run for the whole batch; ``False`` if it must be run one by one instead."""
        try:
            names = batch[0].feeds
            feeds = {name: np.concatenate([r.feeds[name] for r in batch]) for name in names}
            rows = sum(request.rows for request in batch)
            outputs = self._execute(runner, lane, feeds, rows, together=True)
            split = _split(outputs, batch)
        except Exception:  # noqa: BLE001 - retried one by one: each gets its own error
            return False
        if split is None:
            return False
        for request, own in zip(batch, split, strict=True):
            request.result.set(own)
        return True


def _split(outputs: Outputs, batch: list[Request]) -> list[Outputs] | None:
    """Each request's rows of ``outputs``, or ``None`` if an output does not line up."""
    total = sum(request.rows for request in batch)
    if any(array.ndim == 0 or array.shape[0] != total for array in outputs.values()):
        return None
    bounds = np.cumsum([0] + [request.rows for request in batch])
    return [
        {name: array[start:stop] for name, array in outputs.items()}
        for start, stop in pairwise(bounds)
    ]
