"""A multi-model load's own time bound (``SERVING_MME_LOAD_TIMEOUT``, SageMaker's 360 s by
default), set short: a worker's slow load and a peer that does not catch up both end in a 504
that leaves nothing loaded.

The registry runs as in a worker (gevent's monkey patching, a shared store), in a subprocess,
with models whose load sleeps as long as their ``sleep.txt`` says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DRIVER = """
from gevent import monkey

monkey.patch_all()

import json, subprocess, sys, time
from pathlib import Path

from serving.model_store import SharedStore, Report
from serving.model_loading import LoadTimeout
from serving.multimodel import ModelRegistry
from serving.settings import Settings

root = Path(sys.argv[1])


class SleepingState:
    handler = None

    def __init__(self, model_dir):
        self.model_dir = model_dir

    def load(self):
        sleep = self.model_dir / "sleep.txt"
        time.sleep(float(sleep.read_text()) if sleep.is_file() else 0)


environ = {
    "SAGEMAKER_MULTI_MODEL": "true",
    "SERVING_MODELS_DIR": str(root),
    "SERVING_MME_LOAD_TIMEOUT": "0.5",
}
settings = Settings.from_sources(environ, cpus=1)
store = SharedStore.create()
registry = ModelRegistry(settings, store, SleepingState)
registry.start()
found = {}


def attempt(key, name):
    started = time.monotonic()
    try:
        registry.load(name, str(root / name))
        found[key] = ["loaded", None]
    except LoadTimeout as exc:
        found[key] = [exc.status.value, exc.message]
    found[key].append(round(time.monotonic() - started, 2))
    found[key].append(sorted(store.read().models))


try:
    attempt("slow", "slow")  # its own load takes 1.5 s
    attempt("behind it", "fast")  # waits for the slow one, which has not ended
    time.sleep(1.2)
    attempt("after it", "fast")
    registry.unload("fast")
    peer = subprocess.Popen(["sleep", "30"])
    try:
        store.write_report(Report(peer.pid, generation=-1))  # a worker that does not catch up
        attempt("peer behind", "fast")
    finally:
        peer.kill()
        peer.wait()
finally:
    store.remove()
print(json.dumps(found))
"""


def test_slow_loads_end_in_a_504_and_leave_nothing(tmp_path: Path) -> None:
    for name in ("slow", "fast"):
        (tmp_path / name).mkdir()
    (tmp_path / "slow" / "sleep.txt").write_text("1.5")
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(result.stdout.splitlines()[-1])
    status, message, seconds, left = found["slow"]
    assert (status, left) == (504, [])
    assert message.startswith("model 'slow' did not load within 0.5 s in worker")
    assert 0.5 <= seconds < 1.2
    status, message, seconds, left = found["behind it"]
    assert (status, left) == (504, [])  # the abandoned load still holds the worker's turn
    assert message.startswith("model 'fast' did not load within 0.5 s")
    assert found["after it"][0] == "loaded"  # once it ended, the next load goes in
    assert found["after it"][3] == ["fast"]
    status, message, seconds, left = found["peer behind"]
    assert (status, left) == (504, [])
    assert message.startswith("model 'fast' was not loaded: worker ")
    assert message.endswith("did not apply the change within 0.5 s")
