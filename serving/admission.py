"""First come, first served admission of requests into a worker's expensive work, and the
memory their bodies hold.

:class:`FairGate`: a worker lets at most ``requests`` requests, with at most ``body_bytes`` of
bodies between them, decode and run at once; the rest wait, their bodies received. Both limits
keep the event loop's backlog short, so that ``/ping`` is answered within milliseconds under
load: many small requests may be in at once (they batch), few large ones (decoding a 0.6 MB
body takes the loop as long as a small model's whole request).

:class:`BodyMemory`: the bytes of bodies received or arriving, taken as they arrive, so that a
client whose body stalls holds its own bytes and nobody's turn; a multi-model endpoint's models
take turns at it, so that one model's burst of large bodies does not hold up another's.

gevent's semaphores let a newly arrived greenlet take a free slot ahead of those already
waiting, which under load starves some requests for seconds; here a request waits behind every
older one (at the body memory, every older one of its model's), and the oldest goes in as soon
as it fits."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
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


class BodyMemory:
    """The bytes of request bodies a worker holds, within ``capacity``, taken as they arrive.

    A request takes room for each part of its body just before receiving it (so a client that
    declares a large body and sends one byte holds one read's worth, not its Content-Length),
    and gives everything back when it ends. Where a part does not fit, the request waits
    unread. One request at a time may go past the capacity: without that, requests that each
    hold part of it could all wait on one another for good; with it, the memory held stays
    under ``capacity`` plus one body.

    Waiting requests are queued by owner (a multi-model endpoint's model; a single model's
    requests all have the same one), each owner's in arrival order, and the owners take turns:
    as room comes back, the next owner's oldest request goes in if it fits, and that owner goes
    to the back. So a request whose owner has none waiting waits for at most one turn of each
    other owner, however many requests those have queued; with one owner it is first come,
    first served.
    """

    def __init__(self, capacity: int) -> None:
        self._free = capacity
        self._overdrawn: Holding | None = None
        #: Each owner's waiting requests, oldest first; an owner is here while it has one.
        self._waiting: dict[Hashable, deque[tuple[Holding, int, Event]]] = {}
        #: The owners with requests waiting, the next to go in first.
        self._turns: deque[Hashable] = deque()

    def holding(self, owner: Hashable = None) -> Holding:
        """One request's share: ``with memory.holding(owner) as holding:``, given back at the
        end; ``owner`` is what it takes turns as (see the class docstring)."""
        return Holding(self, owner)

    def _end(self, holding: Holding) -> None:
        holding.release()
        if self._overdrawn is holding:
            self._overdrawn = None
            self._grant_waiting()

    def _take(self, holding: Holding, size: int) -> None:
        if self._overdrawn is holding or (not self._turns and self._grant(holding, size)):
            self._free -= size
            return
        turn = Event()
        entry = (holding, size, turn)
        owner = holding.owner
        queue = self._waiting.get(owner)
        if queue is None:
            queue = self._waiting[owner] = deque()
            self._turns.append(owner)
        queue.append(entry)
        try:
            turn.wait()
        except BaseException:
            if entry in queue:  # still waiting, so its queue is still the owner's
                queue.remove(entry)
                if not queue:
                    del self._waiting[owner]
                    self._turns.remove(owner)
                self._grant_waiting()
            else:  # granted just as it was cancelled: it holds the room, given back at its end
                holding.held += size
            raise

    def _grant(self, holding: Holding, size: int) -> bool:
        """Whether ``size`` more may be taken: it fits, or nobody is past the capacity."""
        if size <= self._free:
            return True
        if self._overdrawn is None:
            self._overdrawn = holding
            return True
        return False

    def _give_back(self, size: int) -> None:
        self._free += size
        self._grant_waiting()

    def _grant_waiting(self) -> None:
        turns = self._turns
        while turns:
            owner = turns[0]
            queue = self._waiting[owner]
            holding, size, turn = queue[0]
            if not self._grant(holding, size):
                return  # it keeps its turn: nobody passes a request that does not fit yet
            queue.popleft()
            self._free -= size
            turn.set()
            turns.popleft()
            if queue:
                turns.append(owner)
            else:
                del self._waiting[owner]


class Holding:
    """What one request holds of a :class:`BodyMemory`; a context manager that gives it all
    back at the end (a class, not a generator: it is entered by every request)."""

    __slots__ = ("_memory", "held", "owner")

    def __init__(self, memory: BodyMemory, owner: Hashable = None) -> None:
        self._memory = memory
        self.owner = owner
        self.held = 0

    def __enter__(self) -> Holding:
        return self

    def __exit__(self, *_: object) -> None:
        self._memory._end(self)

    def take(self, size: int) -> None:
        """Wait until ``size`` more bytes may be held, then hold them."""
        self._memory._take(self, size)
        self.held += size

    def release(self, size: int | None = None) -> None:
        """Give back ``size`` bytes (``None``: all held)."""
        size = self.held if size is None else min(size, self.held)
        self.held -= size
        if size:
            self._memory._give_back(size)
