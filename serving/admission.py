"""First come, first served admission of requests into a worker's expensive work.

gevent's semaphores let a newly arrived greenlet take a free slot ahead of those already
waiting, which under load starves some requests for seconds. Here a freed slot goes straight
to the oldest waiter.
"""

from __future__ import annotations

from collections import deque
from types import TracebackType

from gevent.event import Event


class FairGate:
    """At most ``slots`` holders at once; waiters are admitted strictly in arrival order."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: deque[Event] = deque()

    def __enter__(self) -> None:
        if self._free and not self._waiting:
            self._free -= 1
            return
        turn = Event()
        self._waiting.append(turn)
        try:
            turn.wait()
        except BaseException:
            if turn in self._waiting:
                self._waiting.remove(turn)
            elif turn.is_set():  # admitted just as it was cancelled: pass the slot on
                self._release()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        if self._waiting:
            self._waiting.popleft().set()  # the slot passes to the oldest waiter
        else:
            self._free += 1
