"""A model's queue in the executor, and its running estimates of what runs cost
(:mod:`serving.execution`): whether batching pays, and whether a run is short enough to
run inline."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from gevent.event import AsyncResult, Event

from handlers.execution import Feeds

#: Weight of the newest run in the running estimate of a model's time per row.
ESTIMATE_WEIGHT = 0.2

#: Batching is used while a row served in batches takes less than this share of a row served
#: one by one.
BATCH_GAIN = 0.95

#: Every this many takes from the queue, a few (:data:`EXPLORE_TAKES`) are made the other way
#: (one by one while batching, in batches while not), to measure it again.
EXPLORE_EVERY = 64
EXPLORE_TAKES = 3


@dataclass(eq=False)  # identity: requests are found in queues by identity
class Request:
    """One request's inputs, waiting in its model's queue."""

    feeds: Feeds
    rows: int
    #: Requests with equal keys can be concatenated: names, dtypes, shapes past axis 0.
    key: tuple[tuple[str, str, tuple[int, ...]], ...]
    #: Set once, with the request's outputs or error.
    result: AsyncResult = field(default_factory=AsyncResult)
    #: Set when this request's greenlet is to run the next batch (the dispatcher's turn).
    turn: Event = field(default_factory=Event)


@dataclass
class Estimate:
    """A running estimate of a model's seconds per row (0: not measured yet)."""

    per_row: float = 0.0

    def update(self, seconds: float, rows: int) -> None:
        per_row = seconds / max(rows, 1)
        weight = ESTIMATE_WEIGHT if self.per_row else 1.0
        self.per_row += weight * (per_row - self.per_row)


@dataclass
class Cycle:
    """From one take from a busy queue to the next: when it began, the rows taken, how."""

    started: float
    rows: int
    together: bool
    #: Whether the take before was made the same way: the work a cycle holds (answering what
    #: the last run gave, reading the requests that clients send next) follows from the one
    #: before it, so the first cycle after a change measures the old way as much as the new.
    clean: bool


@dataclass
class Lane:
    """One model's queue, how long its runs take, and how long a row takes to serve in batches
    and one by one while requests queue."""

    pending: deque[Request] = field(default_factory=deque)
    dispatchers: int = 0
    #: Seconds per row of a lone run and of a batched one: whether the next run is short
    #: enough to make inline.
    alone: Estimate = field(default_factory=Estimate)
    together: Estimate = field(default_factory=Estimate)
    #: Seconds per row from one take from a busy queue to the next, everything the worker did
    #: meanwhile included: whether batching pays.
    served_alone: Estimate = field(default_factory=Estimate)
    served_together: Estimate = field(default_factory=Estimate)
    takes: int = 0
    cycle: Cycle | None = None
    last_together: bool = False

    def batch_rows(self, max_rows: int) -> int:
        """How many rows the next take from the queue may gather: all it may while a row costs
        clearly less served in batches than one by one, else one request's.

        Both are measured as the worker serves, from one take to the next while requests
        queue, so that all a batch saves or costs counts: the run, joining its inputs, and the
        request handling around it, which runs on caches a large model's run has evicted once
        per run (a conv net serves 15-24% more requests in batches, though its batched runs
        cost about as much per row as lone ones). Until both are measured, the takes go a few each
        way in turn; after, a few in every :data:`EXPLORE_EVERY` go the other way.
        """
        self.takes += 1
        alone, together = self.served_alone.per_row, self.served_together.per_row
        if not (alone and together):
            batching = (self.takes // EXPLORE_TAKES) % 2 == 0
        else:
            batching = together < BATCH_GAIN * alone
            if self.takes % EXPLORE_EVERY < EXPLORE_TAKES:
                batching = not batching
        return max_rows if batching else 1

    def taken(self, now: float, rows: int, together: bool, queued: bool) -> None:
        """Count the cycle a take at ``now`` ends, and begin the next if requests queue:
        ``rows`` were taken, in a batch of several requests or not, and others still wait or
        not. An idle queue's cycles are not counted: they hold the time waiting for requests."""
        if self.cycle is not None and self.cycle.clean:
            estimate = self.served_together if self.cycle.together else self.served_alone
            estimate.update(now - self.cycle.started, self.cycle.rows)
        busy = together or queued
        clean = together == self.last_together
        self.cycle = Cycle(now, rows, together, clean) if busy else None
        self.last_together = together


def rows_of(feeds: Feeds) -> int:
    """The rows of a request: the first input's first dimension (1 for a scalar)."""
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def key_of(feeds: Feeds) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """What must be equal for requests to share a run: names, dtypes, shapes past axis 0."""
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in feeds.items())
