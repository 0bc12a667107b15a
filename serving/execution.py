"""Model runs off the event loop, in native threads, with adaptive micro-batching.

onnxruntime releases the GIL inside ``InferenceSession.run``, so a worker runs it in a gevent
native thread pool and keeps its event loop free for ``/ping`` and for parsing the next
requests. At most ``concurrency`` runs are in flight per worker.

Batching is adaptive: a request that arrives while the worker's runs are all busy waits in a
queue, and when a run finishes, the next one takes every compatible queued request at once
(same shapes past the first axis), up to ``max_batch_rows`` rows. An idle server therefore
runs each request alone with no added delay, and a loaded one batches as much as the load
gives; ``max_delay`` (off by default) also holds a partial batch back to gather more.

No request sees another's rows: outputs are split back by each request's row count, and if a
shared run fails, or its outputs do not line up with its inputs, every member is run again
alone, so one request's bad data fails only that request.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise

import gevent
import numpy as np
from gevent.event import AsyncResult
from gevent.threadpool import ThreadPool

from handlers.execution import Feeds, Runner
from handlers.tensors import Outputs


@dataclass
class _Request:
    feeds: Feeds
    rows: int
    #: Requests with equal keys can be concatenated: names, dtypes, shapes past axis 0.
    key: tuple[tuple[str, str, tuple[int, ...]], ...]
    result: AsyncResult = field(default_factory=AsyncResult)


@dataclass
class _Lane:
    """The queue of one runner (one model)."""

    pending: deque[_Request] = field(default_factory=deque)
    dispatchers: int = 0


class GeventExecutor:
    """Runs model calls in a native thread pool; batches concurrent ones.

    Built in the server's master but used in workers only: the thread pool is created on first
    use, after fork and after gevent has patched the worker. Everything but the model call
    runs in the worker's event loop, so the queues need no locks.
    """

    def __init__(self, concurrency: int, max_batch_rows: int, max_delay: float = 0.0) -> None:
        self.concurrency = concurrency
        self.max_batch_rows = max_batch_rows
        self.max_delay = max_delay
        self._pool: ThreadPool | None = None
        self._lanes: dict[Runner, _Lane] = {}

    def _threads(self) -> ThreadPool:
        if self._pool is None:
            self._pool = ThreadPool(self.concurrency)
        return self._pool

    def run(self, runner: Runner, feeds: Feeds, *, batchable: bool) -> Outputs:
        if not batchable or self.max_batch_rows <= 1:
            return self._call(runner, feeds)
        request = _Request(feeds, _rows(feeds), _key(feeds))
        lane = self._lanes.setdefault(runner, _Lane())
        lane.pending.append(request)
        if lane.dispatchers < self.concurrency:
            lane.dispatchers += 1
            gevent.spawn(self._dispatch, runner, lane)
        outputs: Outputs = request.result.get()
        return outputs

    def _call(self, runner: Runner, feeds: Feeds) -> Outputs:
        # The error comes back as a value: gevent prints every exception that leaves a pool
        # thread to stderr, tracebacks and all, even though apply() re-raises it here.
        outcome: tuple[Outputs, Exception | None] = self._threads().apply(_capture, (runner, feeds))
        outputs, error = outcome
        if error is not None:
            raise error
        return outputs

    def _dispatch(self, runner: Runner, lane: _Lane) -> None:
        try:
            while lane.pending:
                if self.max_delay > 0 and sum(r.rows for r in lane.pending) < self.max_batch_rows:
                    gevent.sleep(self.max_delay)
                self._run_batch(runner, self._take(lane))
        finally:
            lane.dispatchers -= 1

    def _take(self, lane: _Lane) -> list[_Request]:
        """The oldest request and the compatible ones queued after it, up to the row limit."""
        first = lane.pending.popleft()
        batch, rows, kept = [first], first.rows, deque[_Request]()
        while lane.pending:
            request = lane.pending.popleft()
            if request.key == first.key and rows + request.rows <= self.max_batch_rows:
                batch.append(request)
                rows += request.rows
            else:
                kept.append(request)
        lane.pending.extendleft(reversed(kept))
        return batch

    def _run_batch(self, runner: Runner, batch: list[_Request]) -> None:
        first_feeds = batch[0].feeds
        if len(batch) > 1:
            feeds = {name: np.concatenate([r.feeds[name] for r in batch]) for name in first_feeds}
            try:
                outputs = self._call(runner, feeds)
            except Exception:  # noqa: BLE001 - retried one by one: each gets its own error
                outputs = None
            split = _split(outputs, batch) if outputs is not None else None
            if split is not None:
                for request, own in zip(batch, split, strict=True):
                    request.result.set(own)
                return
        for request in batch:
            try:
                request.result.set(self._call(runner, request.feeds))
            except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                request.result.set_exception(exc)


def _capture(runner: Runner, feeds: Feeds) -> tuple[Outputs, Exception | None]:
    try:
        return runner(feeds), None
    except Exception as exc:  # noqa: BLE001 - re-raised in the calling greenlet
        return {}, exc


def _rows(feeds: Feeds) -> int:
    return int(next(iter(feeds.values())).shape[0])


def _key(feeds: Feeds) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in feeds.items())


def _split(outputs: Outputs, batch: list[_Request]) -> list[Outputs] | None:
    """Each request's rows of ``outputs``, or ``None`` if an output does not line up."""
    total = sum(request.rows for request in batch)
    if any(array.ndim == 0 or array.shape[0] != total for array in outputs.values()):
        return None
    bounds = np.cumsum([0] + [request.rows for request in batch])
    return [
        {name: array[start:stop] for name, array in outputs.items()}
        for start, stop in pairwise(bounds)
    ]
