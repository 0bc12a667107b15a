"""Rows 2 and 3 of issue 15's table: bodies that are costly to decode (a zip bomb, large
RecordIO bodies, an ``.npz`` of millions of rows)."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib

import numpy as np

from tests import recordio_wire

from .outcome import Outcome
from .raw_http import JSON, NPZ, RECORDIO, Reply, post, summarize
from .servers import Work, serve
from .watching import check_ping, watching


def deflated_zeros(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes (a multiple of 16 MiB), made quickly: one
    16 MiB block, flushed so that it stands alone, repeated."""
    unit = 1 << 24
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(unit)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * (size // unit) + compressor.flush(zlib.Z_FINISH)


def zip_bomb(inflated: int, declared: int = 64) -> bytes:
    """An ``.npz`` whose one member says it holds ``declared`` bytes but inflates to
    ``inflated``. The declared bytes are zeros, not an array: a reader that stops at the
    declared size and one that notices the lie both answer 400."""
    data, name = deflated_zeros(inflated), b"x.npy"
    crc = zlib.crc32(bytes(declared))
    local = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(data), declared, len(name), 0
    )
    central = struct.pack(
        "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(data), declared,
        len(name), 0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    offset = len(local) + len(name) + len(data)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(name), offset, 0)
    return local + name + data + central + name + end


def zip_bomb_case(outcome: Outcome, quick: bool, work: Work) -> None:
    payload_mb, inflated = (1, 256 << 20) if quick else (6, 2048 << 20)
    body = zip_bomb(inflated)
    # What the server may inflate a body to (16 times the body limit); twice that and some
    # slack is "bounded", against the gigabytes the member claims.
    bound_mb = 2 * 16 * payload_mb + 32
    seconds = 2.0 if quick else 5.0
    outcome.attack = (
        f"a {len(body) / 1e6:.2f} MB `.npz` whose member declares 64 bytes and inflates to "
        f"{inflated >> 20:,} MiB, sent again and again for {seconds:g} s"
    )
    replies: list[Reply] = []
    with (
        serve(work, outcome.name, work.linear, "--max-payload-mb", str(payload_mb)) as server,
        watching(server, outcome),
    ):
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            replies.append(post(server.port, body, NPZ, timeout=60))
    outcome.attacker = summarize(replies)
    slowest = max(r.seconds for r in replies)
    outcome.check(
        "each gets a 400 within 1 s",
        all(r.status == 400 for r in replies) and slowest < 1,
        f"{outcome.attacker}; e.g. {replies[0]}",
    )
    outcome.check(
        f"the worker's peak memory grows by less than {bound_mb} MB",
        outcome.growth_mb < bound_mb,
        f"{outcome.idle_rss_mb:.0f} → {outcome.peak_rss_mb:.0f} MB",
    )
    check_ping(outcome, 10, quick)


def recordio_body(size: int) -> bytes:
    values = recordio_wire.tensor(recordio_wire.FLOAT32, [5.1, 3.5, 1.4, 0.2])
    framed = recordio_wire.frame(recordio_wire.record({"values": values}))
    return framed * max(1, size // len(framed))


def recordio_decode(outcome: Outcome, quick: bool, work: Work) -> None:
    size, seconds = (1_000_000, 2.0) if quick else (6_000_000, 15.0)
    body = recordio_body(size)
    outcome.attack = (
        f"two clients, each posting a valid {size / 1e6:g} MB RecordIO body "
        f"({len(body) // len(recordio_body(1)):,} rows) again and again for {seconds:g} s"
    )
    replies: list[Reply] = []

    def client(port: int) -> None:
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            replies.append(post(port, body, RECORDIO, timeout=120, Accept=JSON))

    with serve(work, outcome.name, work.linear) as server, watching(server, outcome):
        clients = [threading.Thread(target=client, args=(server.port,)) for _ in range(2)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
    outcome.attacker = summarize(replies)
    outcome.check(
        "every body is answered 200", all(r.status == 200 for r in replies), outcome.attacker
    )
    check_ping(outcome, 10, quick)


def npz_rows(outcome: Outcome, quick: bool, work: Work) -> None:
    rows, environ = (1_000_000, {"SERVING_MAX_ROWS": "100000"}) if quick else (6_200_000, {})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros((rows, 4), np.float32))
    body = buffer.getvalue()
    cap = f" (`SERVING_MAX_ROWS={environ['SERVING_MAX_ROWS']}`)" if environ else ""
    outcome.attack = (
        f"a {len(body) / 1e3:.0f} KB `.npz` that decodes to {rows:,} rows "
        f"({rows * 16 / 1e6:.0f} MB){cap}"
    )
    with (
        serve(work, outcome.name, work.linear, environ=environ) as server,
        watching(server, outcome),
    ):
        reply = post(server.port, body, NPZ, timeout=120)
    outcome.attacker = str(reply)
    message = reply.body.decode("latin-1").lower()
    outcome.check(
        "refused within 2 s with a 4xx naming the row cap",
        reply.status is not None and 400 <= reply.status < 500 and "row" in message
        and reply.seconds < 2,
        reply,
    )  # fmt: skip
