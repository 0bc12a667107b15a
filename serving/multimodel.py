"""Multi-model endpoints: the models one worker serves, kept in step with every other worker.

The registry every worker agrees on lives in a :class:`~serving.model_store.SharedStore`; this
module is a worker's side of it, HTTP-free (``serving/models_api.py`` is the HTTP glue):

* **Load** (any worker): claim the name in the store (a second claim is a 409), check the
  memory budget with the artifact's size, load the model here in a thread and measure what it
  added to the worker's resident memory, check the budget again with that footprint, then mark
  it loaded: every other worker, woken, loads it too, and the load is answered once every live
  worker reports that it has. A load that does not fit, or fails in any worker, leaves nothing
  behind.
* **Unload** removes the name from the store; each worker stops giving the model to new
  requests, waits for its requests in flight, frees it and reports; the unload is answered
  once every live worker has. An invoke meanwhile either completes or gets a 404.
* **Invoke** looks the name up in this worker alone: a load's or unload's answer waits for
  every worker, so no request needs to consult the store.
* A worker that starts (a replacement) reports first, then loads what the store lists before
  it serves: changes from then on wait for it.

Loads in one worker run one at a time, so each one's footprint is its own; requests for loaded
models never wait on a load.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gc
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from handlers.errors import InvalidInput, ModelLoadError, ServingError

from .memory import memory_limit, resident_bytes, trim
from .model_store import LOADED, LOADING, Entry, Registry, Report, SharedStore, alive
from .settings import Settings

if TYPE_CHECKING:
    from .app import ModelState
    from .execution import GeventExecutor

log = logging.getLogger(__name__)

MIB = 1024 * 1024

#: A model name: what SageMaker sends is a hash; refused are path separators, controls and
#: spaces, and "." and "..".
MODEL_NAME = re.compile(r"(?!\.\.?$)[A-Za-z0-9._~@+=:,-]{1,256}")

#: Seconds between two looks at the workers' reports while a change waits for them.
REPORT_POLL_SECONDS = 0.005

#: A worker looks at the store at least this often, wake-up or not, and reports its models'
#: last use then.
WAKE_SECONDS = 1.0

#: Seconds a load may take, every worker's included (SageMaker's own limit on a load); also
#: the bound on an unload's wait for the workers.
LOAD_TIMEOUT_SECONDS = 360.0

#: Of the container's memory limit, the share kept back by default (allocator slack).
SLACK_SHARE = 0.05

DEFAULT_PAGE, MAX_PAGE = 100, 1000

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


class ModelRegistry:
    """The models this worker serves (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: SharedStore,
        make_state: StateFactory,
        executor: GeventExecutor | None = None,
        load_timeout: float = LOAD_TIMEOUT_SECONDS,
    ) -> None:
        self._settings = settings
        self._load_timeout = load_timeout
        self._store = store
        self._make_state = make_state
        self._executor = executor
        assert settings.models_dir is not None  # resolved settings
        self.root = settings.models_dir.resolve()
        self._models: dict[str, LoadedModel] = {}
        self._failed: dict[str, list[Any]] = {}
        self._loading = Semaphore(1)
        self._pid = 0
        self._baseline = 0
        self._socket: socket.socket | None = None
        self._reported: Report | None = None
        self.started = False

    # -- the worker's life

    def start(self) -> None:
        """Join the store and load what it lists (in a worker, before it serves)."""
        self._pid = os.getpid()
        self._warm_up()
        self._baseline = resident_bytes()
        self._socket = self._store.listen(self._pid)
        self._report(-1)  # from now on, every change waits for this worker too
        self._sync()
        self.started = True
        gevent.spawn(self._watch)

    def _warm_up(self) -> None:
        folder = self._store.folder / f"probe-{self._pid}"
        folder.mkdir()
        try:
            (folder / "model.onnx").write_bytes(PROBE_MODEL)
            self._make_state(folder).load()
        except Exception as exc:  # noqa: BLE001 - a handler for other models: no harm
            log.debug("no warm-up: %s", exc)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _watch(self) -> None:
        sock = self._socket
        assert sock is not None
        sock.settimeout(WAKE_SECONDS)
        while True:
            with contextlib.suppress(TimeoutError):
                sock.recv(16)  # a wake-up; those queued behind it find nothing new
            try:
                self._sync()
            except Exception:
                log.exception("cannot apply the model registry")

    def _sync(self) -> None:
        """Load what the store lists loaded, free what it does not; then report."""
        while True:
            registry = self._store.read()
            wanted = {n: e for n, e in registry.models.items() if e.state == LOADED}
            for name, model in list(self._models.items()):
                entry = wanted.get(name)
                if entry is None or entry.generation != model.generation:
                    self._free(model)
            missing = [
                (name, entry)
                for name, entry in wanted.items()
                if name not in self._models and self._failed.get(name, [0])[0] != entry.generation
            ]
            if not missing:
                self._failed = {n: f for n, f in self._failed.items() if n in registry.models}
                self._report(registry.generation)
                return
            name, entry = missing[0]
            model_dir = Path(entry.url).resolve()
            until = time.monotonic() + self._load_timeout
            try:
                model = self._load_here(name, entry.url, model_dir, _disk_bytes(model_dir), until)
            except ServingError as exc:
                log.error("model %s cannot be loaded in this worker: %s", name, exc.message)
                self._failed[name] = [entry.generation, exc.message]
                continue
            model.generation = entry.generation
            self._models[name] = model  # freed at the next turn if unloaded meanwhile

    def _free(self, model: LoadedModel) -> None:
        if self._models.get(model.name) is model:
            del self._models[model.name]
        if model.active:
            model.released = Event()
            model.released.wait()
        handler = model.state.handler
        if self._executor is not None and handler is not None:
            parts = getattr(handler, "__dict__", {}).values()
            self._executor.forget({id(handler), *(id(part) for part in parts)})
        del model.state, handler
        gc.collect()  # a session in a reference cycle would outlive the unload
        trim()
        log.info("model %s unloaded", model.name)

    def _report(self, generation: int) -> None:
        report = Report(
            self._pid,
            generation,
            self._baseline,
            {name: model.footprint for name, model in self._models.items()},
            {name: model.last_used for name, model in self._models.items() if model.last_used},
            self._failed,
        )
        if report != self._reported:
            self._store.write_report(report)
            self._reported = report

    # -- requests

    @contextlib.contextmanager
    def serving(self, name: str) -> Iterator[ModelState]:
        """The model called ``name``, held for one request (an unload waits for it)."""
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(f"model {name!r} is not loaded")
        model.active += 1
        model.last_used = time.time()
        try:
            yield model.state
        finally:
            model.active -= 1
            if not model.active and model.released is not None:
                model.released.set()

    def load(self, name: str, url: str) -> Entry:
        """Load ``url`` as ``name`` in every worker; the store's entry once every one has."""
        if not MODEL_NAME.fullmatch(name):
            raise InvalidInput(
                f"invalid model_name {name!r}: 1 to 256 letters, digits or ._~@+=:,- (not . or ..)"
            )
        until = time.monotonic() + self._load_timeout
        model_dir = self._resolve(url)
        estimate = _disk_bytes(model_dir)
        with self._store.change() as registry:
            held = registry.models.get(name)
            if held is not None and (held.state == LOADED or alive(held.owner)):
                raise ModelExists(f"model {name!r} is already loaded")
            evicted = self._room(registry, name, estimate)
            registry.models[name] = Entry(url, LOADING, self._pid, estimate)
            claimed = registry.generation
        try:
            if evicted:
                self._wait_for_workers(claimed, until)
            model = self._load_here(name, url, model_dir, estimate, until)
        except BaseException:
            self._withdraw(name, None)
            raise
        try:
            with self._store.change() as registry:
                self._room(registry, name, model.footprint)
                generation = registry.generation
                entry = Entry(url, LOADED, self._pid, model.footprint, generation, time.time())
                registry.models[name] = entry
                model.generation = generation
                self._models[name] = model
        except BaseException:
            self._withdraw(name, None)
            del model.state
            gc.collect()
            trim()
            raise
        try:
            reports = self._wait_for_workers(entry.generation, until)
        except LoadTimeout as exc:
            # The slow workers free it once their load ends: their next turn finds it gone.
            self._withdraw(name, entry.generation)
            raise LoadTimeout(f"model {name!r} was not loaded: {exc.message}") from None
        failures = self._failures(name, reports, entry)
        if failures:
            self._withdraw(name, entry.generation)
            self._wait_for_workers(self._store.read().generation, until)
            raise ServingError(f"model {name!r} could not be loaded in every worker: {failures}")
        log.info(
            "model %s loaded from %s in %.2f s: %.1f MB per worker",
            name,
            url,
            model.load_seconds,
            model.footprint / MIB,
        )
        return entry

    def unload(self, name: str) -> None:
        """Unload ``name`` from every worker; returns once every one has freed it."""
        with self._store.change() as registry:
            if name not in self.loaded(registry):
                raise ModelNotFound(f"model {name!r} is not loaded")
            del registry.models[name]
            generation = registry.generation
        self._wait_for_workers(generation, time.monotonic() + self._load_timeout)

    @staticmethod
    def loaded(registry: Registry) -> dict[str, Entry]:
        return {name: e for name, e in registry.models.items() if e.state == LOADED}

    def describe(self, name: str) -> Entry:
        entry = self.loaded(self._store.read()).get(name)
        if entry is None:
            raise ModelNotFound(f"model {name!r} is not loaded")
        return entry

    def page(self, token: str | None, size: int) -> tuple[list[tuple[str, Entry]], str | None]:
        """Loaded models by name, ``size`` at most from where ``token`` says, and the token
        of the next page (``None``: this is the last)."""
        after = ""
        if token:
            try:
                after = base64.b64decode(token, altchars=b"-_", validate=True).decode()
            except (ValueError, binascii.Error, UnicodeError):
                raise InvalidInput(f"invalid next_page_token {token!r}") from None
        models = sorted(self.loaded(self._store.read()).items())
        rest = [(name, entry) for name, entry in models if name > after]
        page = rest[:size]
        if len(rest) <= size:
            return page, None
        return page, base64.urlsafe_b64encode(page[-1][0].encode()).decode()

    # -- loading, memory and waiting

    def _resolve(self, url: str) -> Path:
        path = Path(url)
        if not path.is_absolute():
            raise InvalidInput(f"url {url!r} is not an absolute path")
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root) or resolved == self.root:
            raise InvalidInput(f"url {url!r} is not inside the models directory {self.root}")
        if not resolved.is_dir():
            raise ModelNotFound(f"url {url!r}: no such model directory")
        return resolved

    def _load_here(
        self, name: str, url: str, model_dir: Path, disk: int, until: float
    ) -> LoadedModel:
        """Load in a thread (the event loop keeps serving), one load at a time, by the
        monotonic time ``until``. The footprint is the resident memory the load added, and at
        least the artifact's size: memory freed by an unload is used again without growing
        the resident set."""
        # Handed over in a list emptied here: an idle pool thread keeps what its last task
        # returned, and would keep a model that is then refused alive.
        box: list[Any] = []
        late = LoadTimeout(
            f"model {name!r} did not load within {self._load_timeout:g} s in worker {self._pid}"
        )
        if not self._loading.acquire(timeout=max(until - time.monotonic(), 0)):
            raise late  # another load here has not ended (or been abandoned and not ended)
        done = gevent.get_hub().threadpool.spawn(self._measured, model_dir, box)
        try:
            done.get(timeout=max(until - time.monotonic(), 0))
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

    def _room(self, registry: Registry, name: str, footprint: int) -> list[str]:
        """Make the budget hold ``name`` at ``footprint`` bytes per worker: evict (lru) or a
        507. Returns the names evicted."""
        workers = self._settings.workers
        budget = self.budget()
        others = {n: e for n, e in registry.models.items() if n != name}
        used = sum(entry.footprint for entry in others.values()) * workers
        needed = footprint * workers
        evicted: list[str] = []
        if used + needed > budget and self._settings.mme_evict == "lru":
            for victim in self._least_recently_used(self.loaded(registry)):
                del registry.models[victim]
                evicted.append(victim)
                used -= others[victim].footprint * workers
                if used + needed <= budget:
                    break
        if used + needed > budget:
            raise InsufficientMemory(
                f"model {name!r} needs {needed / MIB:.1f} MB ({workers} worker"
                f"{'s' if workers > 1 else ''}); {max(budget - used, 0) / MIB:.1f} MB of "
                f"{budget / MIB:.1f} MB is free"
            )
        for victim in evicted:
            log.info("model %s evicted (least recently used) to make room for %s", victim, name)
        return evicted

    def budget(self) -> int:
        """Bytes the models may take, every worker's copy together."""
        if self._settings.mme_memory_mb:
            return int(self._settings.mme_memory_mb * MIB)
        limit = memory_limit()
        server = resident_bytes(os.getppid()) + sum(r.baseline for r in self._store.reports())
        bodies = int(self._settings.workers * self._settings.max_buffered_mb * MIB)
        return limit - server - bodies - int(limit * SLACK_SHARE)

    def _least_recently_used(self, loaded: dict[str, Entry]) -> list[str]:
        last: dict[str, float] = {name: entry.loaded_at for name, entry in loaded.items()}
        for report in self._store.reports():
            for name, when in report.last_used.items():
                if name in last:
                    last[name] = max(last[name], when)
        for name, model in self._models.items():
            if name in last:
                last[name] = max(last[name], model.last_used)
        return sorted(last, key=last.__getitem__)

    def _withdraw(self, name: str, generation: int | None) -> None:
        """Take back this worker's claim on ``name`` (or the entry of ``generation``)."""
        with self._store.change() as registry:
            entry = registry.models.get(name)
            if entry is not None and (
                (generation is None and entry.owner == self._pid and entry.state == LOADING)
                or entry.generation == generation
            ):
                del registry.models[name]
        model = self._models.get(name)
        if model is not None and (generation is None or model.generation == generation):
            self._free(model)

    def _wait_for_workers(self, generation: int, until: float) -> list[Report]:
        """The live workers' reports once every one has applied ``generation``; a
        :class:`LoadTimeout` naming those that have not by the monotonic time ``until``."""
        while True:
            reports = self._store.reports()
            behind = [report.pid for report in reports if report.generation < generation]
            if not behind:
                return reports
            if time.monotonic() >= until:
                raise LoadTimeout(
                    f"worker{'s' if len(behind) > 1 else ''} {', '.join(map(str, behind))} "
                    f"did not apply the change within {self._load_timeout:g} s"
                )
            time.sleep(REPORT_POLL_SECONDS)

    @staticmethod
    def _failures(name: str, reports: list[Report], entry: Entry) -> str:
        return "; ".join(
            f"worker {report.pid}: {report.failed[name][1]}"
            for report in reports
            if report.failed.get(name, [None])[0] == entry.generation
        )


def _disk_bytes(model_dir: Path) -> int:
    """What the model's files take on disk: what its load will take at least."""
    total = 0
    for path in model_dir.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total


def page_size(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise InvalidInput(f"invalid max_results {text!r}: a whole number from 1 to {MAX_PAGE}")
    return int(text)
