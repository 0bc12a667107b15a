"""A worker's registry when its watcher lags: a model another worker unloaded, still here
because this worker's watcher waits on another model's request, is freed once, neither left
behind for good nor freed twice, when this worker answers a load of the same name meanwhile.

The registry runs as in a worker (gevent's monkey patching, a shared store), in a subprocess,
with stand-in models and an executor that records what it is told to forget.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = """
from gevent import monkey

monkey.patch_all()

import json, sys
from pathlib import Path

import pytest

import gevent
from gevent.event import Event

from serving.model_store import SharedStore
from serving.multimodel import ModelRegistry
from serving.settings import Settings

root, apart = Path(sys.argv[1]), sys.argv[2] == "apart"


class State:
    def __init__(self, model_dir):
        self.handler = object()

    def load(self):
        pass


class Executor:
    def __init__(self):
        self.forgotten = set()

    def forget(self, owners):
        self.forgotten |= owners


environ = {"SAGEMAKER_MULTI_MODEL": "true", "SERVING_MODELS_DIR": str(root)}
settings = Settings.from_sources(environ, cpus=1)
store = SharedStore.create()
executor = Executor()
registry = ModelRegistry(settings, store, State, executor)
registry.start()


def handler(name):
    with registry.serving(name) as state:
        return id(state.handler)


try:
    registry.load("busy", str(root / "busy"))
    registry.load("model", str(root / "model"))
    first = handler("model")
    release = Event()

    def request():
        with registry.serving("busy"):
            release.wait()

    in_flight = gevent.spawn(request)
    gevent.sleep(0.05)
    for name in ("busy", "model"):  # unloaded by another worker
        with store.change() as registry_file:
            del registry_file.models[name]
        if apart:  # the watcher sees only the first, and waits for the request on "busy"
            gevent.sleep(0.2)
    gevent.sleep(0.2)
    load = gevent.spawn(registry.load, "model", str(root / "model"))
    gevent.sleep(0.2)
    release.set()
    in_flight.join()
    load.get(timeout=10)
    second = handler("model")
    found = {
        "replaced": first != second,
        "first freed": first in executor.forgotten,
        "second kept": second not in executor.forgotten,
        "loaded": sorted(store.read().models),
    }
finally:
    store.remove()
print(json.dumps(found))
"""


@pytest.mark.parametrize("unloads", ["apart", "together"])
def test_a_model_unloaded_elsewhere_is_freed_once_when_its_name_is_loaded_here(
    tmp_path: Path, unloads: str
) -> None:
    """``apart``: the watcher's pass began before the model was unloaded, and would keep it;
    ``together``: its pass is to free it too, after the load here has."""
    for name in ("busy", "model"):
        (tmp_path / name).mkdir()
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path), unloads],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(result.stdout.splitlines()[-1])
    assert found == {
        "replaced": True,
        "first freed": True,
        "second kept": True,
        "loaded": ["model"],
    }
    assert "cannot apply the model registry" not in result.stderr
