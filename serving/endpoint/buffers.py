"""Large bodies, received straight into buffers sized by their ``Content-Length``, those
buffers used again, and written a piece at a time as the socket takes them.

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

import asyncio

#: The receive buffer's first size, the API's and a container connection's (it grows for a
#: head that does not fit).
RECEIVE_BYTES = 16 * 1024
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


#: Bodies larger than this are written in pieces of this size as the socket takes them.
LARGE_BODY = 256 * 1024


async def write_large(
    transport: asyncio.Transport, writable: asyncio.Event, data: bytes | memoryview
) -> None:
    """Write ``data`` a piece at a time, each once the transport's buffer has drained.

    Python 3.11's socket transport keeps what the socket did not take in a bytearray that it
    deletes from the front after every send: 4 MiB written at once cost ~10 ms of CPU in
    those moves; piece by piece, the buffer stays small."""
    view = memoryview(data)
    for start in range(0, len(view), LARGE_BODY):
        await writable.wait()
        if transport.is_closing():  # the peer went away
            return
        transport.write(view[start : start + LARGE_BODY])
