"""What receiving a request body costs the worker: ``SocketBody.read`` of a body already sent
over a socket pair, CPU per body.

    .venv/bin/python benchmarks/receive.py                    # 0.6 MB, as the conv net's .npy
    .venv/bin/python benchmarks/receive.py --with-head 0      # none of it came with the head

``--with-head`` bytes of the body are taken as received with the request's head (the worker's
first ``recv`` takes up to 64 KiB), the rest is read from the socket.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serving.body import SocketBody


def cpu_per_body(size: int, with_head: int, bodies: int) -> float:
    """µs of CPU a body of ``size`` bytes takes to receive, ``with_head`` of them already in."""
    sender, receiver = socket.socketpair()
    with sender, receiver:
        for side in (sender, receiver):  # the whole body fits in the pair's buffers
            side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * size)
            side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 * size)
        body = os.urandom(size)
        head, rest = body[:with_head], body[with_head:]
        spent = 0.0
        for _ in range(bodies):
            sender.sendall(rest)
            started = time.process_time()
            received = SocketBody(head, receiver, size).read()
            spent += time.process_time() - started
            if received != body:
                raise RuntimeError("the body came back different")
    return spent / bodies * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=602_240, help="body bytes")
    parser.add_argument("--with-head", type=int, default=65_000, help="body bytes in the head")
    parser.add_argument("--bodies", type=int, default=3000)
    arguments = parser.parse_args()
    cpu = cpu_per_body(arguments.size, arguments.with_head, arguments.bodies)
    print(
        f"{cpu:.1f} µs of CPU a {arguments.size:,}-byte body "
        f"({arguments.with_head:,} with the head)"
    )


if __name__ == "__main__":
    main()
