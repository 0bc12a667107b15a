"""The soak: many requests from a few keep-alive clients, valid and malformed mixed, with the
worker's memory watched throughout."""

from __future__ import annotations

import http.client
import io
import math
import threading
import time
from collections import Counter

import numpy as np

from tests import recordio_wire

from .outcome import Outcome
from .raw_http import JSON, NPZ, RECORDIO, SMALL
from .servers import Work, serve
from .watching import memory_mb, only_worker, watching


def soak_mix() -> list[tuple[str, bytes, dict[str, str], bool]]:
    """(what, body, headers, valid) for each request kind of the soak."""
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]], np.float32)
    npy, npz = io.BytesIO(), io.BytesIO()
    np.save(npy, x)
    np.savez(npz, x=x)
    values = recordio_wire.tensor(recordio_wire.FLOAT32, x[0].tolist())
    recordio = recordio_wire.body(recordio_wire.record({"values": values}))
    return [
        ("JSON", SMALL, {"Content-Type": JSON}, True),
        ("CSV", b"5.1,3.5,1.4,0.2\n6.3,3.3,6.0,2.5\n", {"Content-Type": "text/csv"}, True),
        (".npy", npy.getvalue(), {"Content-Type": "application/x-npy"}, True),
        (".npz", npz.getvalue(), {"Content-Type": NPZ, "Accept": NPZ}, True),
        ("RecordIO", recordio, {"Content-Type": RECORDIO, "Accept": RECORDIO}, True),
        ("truncated JSON", b"[[5.1, 3.5", {"Content-Type": JSON}, False),
        ("wrong shape", b"[[1, 2, 3]]", {"Content-Type": JSON}, False),
        ("NaN", b"[[NaN, 1, 2, 3]]", {"Content-Type": JSON}, False),
        ("bad CSV", b"1,x,3,4\n", {"Content-Type": "text/csv"}, False),
        ("bad .npy", b"\x93NUMPY garbage", {"Content-Type": "application/x-npy"}, False),
        ("bad .npz", b"PK\x03\x04 garbage", {"Content-Type": NPZ}, False),
        ("bad RecordIO", b"\x0a\x23\xd7\xce\xff\xff\xff\x7f", {"Content-Type": RECORDIO}, False),
        ("empty body", b"", {"Content-Type": JSON}, False),
        ("unknown type", SMALL, {"Content-Type": "text/plain"}, False),
        ("unacceptable", SMALL, {"Content-Type": JSON, "Accept": "image/gif"}, False),
    ]


def soak(outcome: Outcome, quick: bool, work: Work) -> None:
    total, clients = (4_000 if quick else 200_000), 4
    mix = soak_mix()
    outcome.attack = (
        f"{total:,} requests from {clients} keep-alive clients, cycling through "
        f"{sum(valid for *_, valid in mix)} valid and {sum(not v for *_, v in mix)} malformed "
        f"kinds (bad JSON, CSV, .npy, .npz, RecordIO, NaN, wrong shape, empty, 415, 406)"
    )
    statuses: Counter[tuple[bool, str]] = Counter()
    lock = threading.Lock()
    done = [0]

    def client(port: int, offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        counts: Counter[tuple[bool, str]] = Counter()
        for index in range(offset, total, clients):
            _what, body, headers, valid = mix[index % len(mix)]
            try:
                connection.request("POST", "/invocations", body, headers)
                response = connection.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                connection.close()
            counts[(valid, status)] += 1
            if index % 256 == 0:
                with lock:
                    done[0] += 256
        connection.close()
        with lock:
            statuses.update(counts)

    samples: list[float] = []
    with serve(work, outcome.name, work.linear) as server, watching(server, outcome):
        worker = only_worker(server)
        threads = [threading.Thread(target=client, args=(server.port, i)) for i in range(clients)]
        for thread in threads:
            thread.start()
        start_mb = None
        while any(thread.is_alive() for thread in threads):
            rss = memory_mb(worker, "VmRSS")
            if rss is not None:
                samples.append(rss)
                if start_mb is None and done[0] >= total // 10:
                    start_mb = rss  # after a tenth, as warmed up as it gets
            time.sleep(0.25)
        for thread in threads:
            thread.join()
        end_mb = memory_mb(worker, "VmRSS")
    server_errors = sum(n for (_, s), n in statuses.items() if s.startswith("5"))
    wrong = {
        f"{'valid' if valid else 'malformed'}: {status}": n
        for (valid, status), n in statuses.items()
        if (status != "200" if valid else not status.startswith("4"))
    }
    outcome.attacker = ", ".join(
        f"{'valid' if v else 'malformed'} {s} ×{n:,}" for (v, s), n in sorted(statuses.items())
    )
    outcome.check("no 5xx", server_errors == 0, f"{server_errors} 5xx")
    outcome.check(
        "every valid body 200, every malformed one a 4xx, no connection dropped",
        not wrong,
        wrong or "as expected",
    )
    start = start_mb if start_mb is not None else (samples[0] if samples else math.nan)
    end = end_mb if end_mb is not None else math.nan
    outcome.check(
        "memory flat: the worker's RSS at the end within 10 MB of where it was after the "
        "first tenth",
        end - start < 10,
        f"{start:.1f} → {end:.1f} MB (peak {max(samples, default=math.nan):.1f})",
    )
