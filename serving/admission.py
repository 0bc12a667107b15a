"""First come, first served admission of requests into a worker's expensive work.

A worker lets at most ``requests`` requests, with at most ``body_bytes`` of bodies between
them, read, decode and run at once; the rest wait unread. Both limits keep the event loop's
backlog short, so that ``/ping`` is answered within milliseconds under load: many small
requests may be in at once (they batch), few large ones (reading and decoding a 0.6 MB body
takes the loop as long as a small model's whole request).

gevent's semaphores let a newly arrived greenlet take a free slot ahead of those already
waiting, which under load starves some requests for seconds; here a request waits behind every
older one, and the oldest goes in as soon as it fits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from gevent.event import Event


class FairGate:
    """At most ``requests`` holders and ``body_bytes`` of weight at once, in arrival order.

    A weight above ``body_bytes`` counts as ``body_bytes``: a large request goes in alone
    rather than never.
    """

    def __init__(self, requests: int, body_bytes: int) -> None:
        self._free_requests = requests
        self._free_bytes = body_bytes
        self._capacity = body_bytes
        self._waiting: deque[tuple[int, Event]] = deque()

    @contextmanager
    def admit(self, weight: int) -> Iterator[None]:
        weight = min(max(weight, 0), self._capacity)
        if self._waiting or not self._fits(weight):
            turn = Event()
            entry = (weight, turn)
            self._waiting.append(entry)
            try:
                turn.wait()
            except BaseException:
                if entry in self._waiting:
                    self._waiting.remove(entry)
                    self._admit_waiting()  # it may have been blocking smaller ones behind it
                else:  # admitted just as it was cancelled: give the room back
                    self._release(weight)
                raise
        else:
            self._take(weight)
        try:
            yield
        finally:
            self._release(weight)

    def _fits(self, weight: int) -> bool:
        return self._free_requests > 0 and weight <= self._free_bytes

    def _take(self, weight: int) -> None:
        self._free_requests -= 1
        self._free_bytes -= weight

    def _release(self, weight: int) -> None:
        self._free_requests += 1
        self._free_bytes += weight
        self._admit_waiting()

    def _admit_waiting(self) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            weight, turn = self._waiting.popleft()
            self._take(weight)
            turn.set()
