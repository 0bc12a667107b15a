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

#: Batching is used while a batched run costs less than this share of lone runs, per row.
BATCH_GAIN = 0.9

#: Runs between two batches that measure again whether batching pays, and their rows.
REMEASURE_EVERY = 64
REMEASURE_ROWS = 4


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
class Lane:
    """One model's queue, and how long its runs take alone and in batches."""

    pending: deque[Request] = field(default_factory=deque)
    dispatchers: int = 0
    alone: Estimate = field(default_factory=Estimate)
    together: Estimate = field(default_factory=Estimate)
    runs_since_batch: int = 0

    def batch_rows(self, max_rows: int) -> int:
        """How many rows the next run may gather: all it may while batched runs cost clearly
        less per row than lone ones, as last measured, else one request's.

        Compute-bound models (convolutions) run no faster per row in batches, and the copy
        into one batch costs extra; for them requests run one by one, with a small batch now
        and then to measure again.
        """
        if not self.together.per_row:
            return max_rows  # measure a batch
        if not self.alone.per_row:
            return 1  # measure a request alone
        if self.together.per_row < BATCH_GAIN * self.alone.per_row:
            return max_rows
        if self.runs_since_batch >= REMEASURE_EVERY:
            return min(max_rows, REMEASURE_ROWS)
        return 1


def rows_of(feeds: Feeds) -> int:
    """The rows of a request: the first input's first dimension (1 for a scalar)."""
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def key_of(feeds: Feeds) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """What must be equal for requests to share a run: names, dtypes, shapes past axis 0."""
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in feeds.items())
