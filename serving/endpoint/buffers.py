"""Large bodies, received straight into buffers sized by their ``Content-Length``, and those
buffers used again.

A body that does not arrive with its head is received with ``recv_into`` into a buffer of its
own (:class:`asyncio.BufferedProtocol`), not gathered from the transport's fresh 256 KiB
``bytes`` and joined: that gathering cost more in page faults (each fresh megabyte is 256 of
them) and copies than the socket calls themselves. The buffers come from :data:`POOL`.

Who may give a buffer back: the one that holds it last, and only once no transport holds a
view of it. Python 3.12's socket transports keep a view of what a ``write`` could not send at
once (3.11 copies it), so a buffer written to a transport that still has bytes to send is not
given back but dropped, and an exchange that ends with bytes unsent aborts its connection.
"""

from __future__ import annotations

#: Bodies shorter than this are plain ``bytes``: pooling them would save nothing.
MIN_POOLED = 64 * 1024
#: What the pool keeps at most, in all (larger buffers are dropped when given back).
MAX_POOLED_BYTES = 32 * 1024 * 1024
#: How many buffers it keeps at most.
MAX_POOLED = 8


class BufferPool:
    """Buffers of at least :data:`MIN_POOLED` bytes, to receive bodies into."""

    def __init__(self) -> None:
        self._free: list[bytearray] = []
        self._bytes = 0

    def take(self, size: int) -> bytearray:
        """A buffer of at least ``size`` bytes (its contents are leftovers: overwrite them)."""
        best = None
        for index, buffer in enumerate(self._free):
            if len(buffer) >= size and (best is None or len(buffer) < len(self._free[best])):
                best = index
        if best is None:
            return bytearray(max(size, MIN_POOLED))
        buffer = self._free.pop(best)
        self._bytes -= len(buffer)
        return buffer

    def give(self, buffer: bytearray) -> None:
        """Keep ``buffer`` for a later :meth:`take`: its giver holds no view of it any more."""
        if len(self._free) < MAX_POOLED and self._bytes + len(buffer) <= MAX_POOLED_BYTES:
            self._free.append(buffer)
            self._bytes += len(buffer)


#: The process's pool: the API's connections and its connections to containers share it
#: (one event loop, one thread).
POOL = BufferPool()
