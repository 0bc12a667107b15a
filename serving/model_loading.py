"""Loading one model into a multi-model worker, and freeing it: HTTP-free.

A load runs in a pool thread (the event loop keeps serving), one at a time in a worker (so
that each footprint is the model's own), by a deadline. Its footprint is the resident memory
it added, with the C allocator's free memory given back to the system before and after (what
the load used for a moment is not the model's), and at least its files' size (memory an
unload freed to the allocator is used again without growing the resident set).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from handlers.errors import InvalidInput, ModelLoadError, ServingError

from .memory import resident_bytes, trim

if TYPE_CHECKING:
    from .app import ModelState
    from .execution import GeventExecutor

log = logging.getLogger(__name__)

#: An ONNX model that passes its one input through (71 bytes), loaded once as a worker starts:
#: the runtime's own memory (onnxruntime: 20 MB to import, 10 MB more for a first session)
#: then counts in the worker's baseline, not in the first model's footprint.
PROBE_MODEL = (
    b'\x08\x08:=\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x05probeZ\x10\n\x01x\x12\x0b\n\t\x08'
    b"\x01\x12\x05\n\x03\x12\x01Nb\x10\n\x01y\x12\x0b\n\t\x08\x01\x12\x05\n\x03\x12\x01NB\x04\n\x00\x10\x11"
)

StateFactory = Callable[[Path], "ModelState"]


class ModelNotFound(ServingError):
    status = HTTPStatus.NOT_FOUND


class ModelExists(ServingError):
    status = HTTPStatus.CONFLICT


class InsufficientMemory(ServingError):
    status = HTTPStatus.INSUFFICIENT_STORAGE


class LoadTimeout(ServingError):
    status = HTTPStatus.GATEWAY_TIMEOUT


@dataclass(eq=False)
class LoadedModel:
    name: str
    url: str
    state: ModelState
    #: Bytes this worker's resident memory grew by as it loaded.
    footprint: int
    load_seconds: float
    generation: int = 0
    #: Requests in it now, and when one last came (wall clock: compared across workers).
    active: int = 0
    last_used: float = 0.0
    #: Set once it is unloaded and its last request has left.
    released: Event | None = None


class ModelLoader:
    """Loads models in this worker (see the module docstring); ``timeout`` is only named in
    the messages: each load is given its own deadline."""

    def __init__(
        self, make_state: StateFactory, executor: GeventExecutor | None, timeout: float
    ) -> None:
        self._make_state = make_state
        self._executor = executor
        self._timeout = timeout
        self._loading = Semaphore(1)
        self.pid = 0

    def warm_up(self, folder: Path) -> None:
        """Load :data:`PROBE_MODEL` once from ``folder`` (made and removed here)."""
        folder.mkdir()
        try:
            (folder / "model.onnx").write_bytes(PROBE_MODEL)
            self._make_state(folder).load()
        except Exception as exc:  # noqa: BLE001 - a handler for other models: no harm
            log.debug("no warm-up: %s", exc)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def load(self, name: str, url: str, model_dir: Path, disk: int, until: float) -> LoadedModel:
        """Load ``model_dir`` as ``name`` by the monotonic time ``until``; ``disk`` is its
        files' size, the least its footprint may be."""
        # Handed over in a list emptied here: an idle pool thread keeps what its last task
        # returned, and would keep a model that is then refused alive.
        box: list[Any] = []
        late = LoadTimeout(
            f"model {name!r} did not load within {self._timeout:g} s in worker {self.pid}"
        )
        if not self._loading.acquire(timeout=max(until - time.monotonic(), 0)):
            raise late  # another load here has not ended (or been abandoned and not ended)
        done = gevent.get_hub().threadpool.spawn(self._measured, model_dir, box)
        try:
            _wait_for(box, done, until)
        except BaseException as exc:
            # A thread cannot be stopped: the load goes on, and what it made is freed (and the
            # next load let in) when it ends.
            done.rawlink(lambda _: self._abandoned(box))
            if isinstance(exc, gevent.Timeout):
                log.error("%s; it is abandoned", late.message)
                raise late from None
            raise
        self._loading.release()
        result, error = box.pop()
        if isinstance(error, ModelLoadError):
            raise InvalidInput(f"model {name!r} cannot be loaded: {error}") from error
        if isinstance(error, MemoryError):
            raise InsufficientMemory(f"model {name!r} does not fit in memory") from error
        if error is not None:
            log.error("model %s cannot be loaded", name, exc_info=error)
            raise ServingError(
                f"model {name!r} cannot be loaded: {type(error).__name__}: {error}"
            ) from error
        state, footprint, seconds = result
        return LoadedModel(name, url, state, max(footprint, disk), seconds)

    def free(self, model: LoadedModel) -> None:
        """Let go of ``model`` (no request holds it any more) and give its memory back."""
        handler = model.state.handler
        if self._executor is not None and handler is not None:
            parts = getattr(handler, "__dict__", {}).values()
            self._executor.forget({id(handler), *(id(part) for part in parts)})
        del model.state, handler
        gc.collect()  # a session in a reference cycle would outlive the unload
        trim()

    def _abandoned(self, box: list[Any]) -> None:
        """An abandoned load ended: free what it made, let the next load in."""
        box.clear()
        gc.collect()
        trim()
        self._loading.release()

    def _measured(self, model_dir: Path, box: list[Any]) -> None:
        """In a pool thread: the loaded state, the resident bytes it added and the seconds
        it took; or the error (not raised: gevent prints what leaves a pool thread)."""
        trim()
        before, started = resident_bytes(), time.perf_counter()
        try:
            state = self._make_state(model_dir)
            state.load()
        except Exception as exc:  # noqa: BLE001 - re-raised by the caller, in its greenlet
            box.append((None, exc))
            return
        trim()  # what the load used for a moment is not the model's
        footprint = max(resident_bytes() - before, 0)
        box.append(((state, footprint, time.perf_counter() - started), None))


#: How often a load's wait looks at its result itself, in seconds.
RESULT_POLL_SECONDS = 0.25


def _wait_for(box: list[Any], done: Any, until: float) -> None:
    """Wait until the load thread has put its result in ``box``; ``gevent.Timeout`` at the
    monotonic time ``until``. Looked at every :data:`RESULT_POLL_SECONDS` as well as awaited:
    in one CI run of the churn test (3,000 loads), a thread's result, put in ``box`` 0.01 s
    after its load began, reached the waiting greenlet only when the worker stopped 85 s later
    (the thread pool's wake-up of the event loop was lost; not reproduced since)."""
    while not box:
        remaining = until - time.monotonic()
        if remaining <= 0:
            raise gevent.Timeout(0)
        done.wait(min(remaining, RESULT_POLL_SECONDS))


def resolve(url: str, root: Path) -> Path:
    """The model directory ``url`` names, which must lie inside ``root`` (resolved)."""
    path = Path(url)
    if not path.is_absolute():
        raise InvalidInput(f"url {url!r} is not an absolute path")
    resolved = path.resolve()
    if not resolved.is_relative_to(root) or resolved == root:
        raise InvalidInput(f"url {url!r} is not inside the models directory {root}")
    if not resolved.is_dir():
        raise ModelNotFound(f"url {url!r}: no such model directory")
    return resolved


def disk_bytes(model_dir: Path) -> int:
    """What the model's files take on disk: what its load will take at least."""
    total = 0
    for path in model_dir.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total
