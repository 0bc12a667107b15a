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

Loading a model in this worker is :mod:`serving.model_loading`'s (in a thread, one at a time,
its footprint measured); whether it fits is :mod:`serving.model_budget`'s. Requests for loaded
models never wait on a load.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event

from handlers.errors import InvalidInput, ServingError

from .memory import MIB, resident_bytes
from .model_budget import MemoryBudget, loaded
from .model_loading import (
    LoadedModel,
    LoadTimeout,
    ModelExists,
    ModelLoader,
    ModelNotFound,
    StateFactory,
    disk_bytes,
    resolve,
)
from .model_store import LOADED, LOADING, Entry, Registry, Report, SharedStore, alive
from .settings import Settings

if TYPE_CHECKING:
    from .app import ModelState
    from .execution import GeventExecutor

log = logging.getLogger(__name__)

#: A model name: what SageMaker sends is a hash; refused are path separators, controls and
#: spaces, and "." and "..".
MODEL_NAME = re.compile(r"(?!\.\.?$)[A-Za-z0-9._~@+=:,-]{1,256}")

#: Seconds between two looks at the workers' reports while a change waits for them.
REPORT_POLL_SECONDS = 0.005

#: A worker looks at the store at least this often, wake-up or not, and reports its models'
#: last use then.
WAKE_SECONDS = 1.0


class ModelRegistry:
    """The models this worker serves (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: SharedStore,
        make_state: StateFactory,
        executor: GeventExecutor | None = None,
    ) -> None:
        #: Seconds a load may take, every worker's included (``SERVING_MME_LOAD_TIMEOUT``);
        #: also the bound on an unload's wait for the workers.
        self._load_timeout = settings.mme_load_timeout
        self._store = store
        self._loader = ModelLoader(make_state, executor, self._load_timeout)
        self._budget = MemoryBudget(settings, store)
        assert settings.models_dir is not None  # resolved settings
        self.root = settings.models_dir.resolve()
        self._models: dict[str, LoadedModel] = {}
        self._failed: dict[str, list[Any]] = {}
        self._pid = 0
        self._baseline = 0
        self._socket: socket.socket | None = None
        self._reported: Report | None = None
        self.started = False

    # -- the worker's life

    def start(self) -> None:
        """Join the store and load what it lists (in a worker, before it serves)."""
        self._pid = self._loader.pid = os.getpid()
        self._loader.warm_up(self._store.folder / f"probe-{self._pid}")
        self._baseline = resident_bytes()
        self._socket = self._store.listen(self._pid)
        self._report(-1)  # from now on, every change waits for this worker too
        started = time.perf_counter()
        self._sync()
        self.started = True
        gevent.spawn(self._watch)
        count = len(self._models)
        log.info(
            "worker serves the model registry: %d model%s loaded in %.2f s",
            count,
            "" if count == 1 else "s",
            time.perf_counter() - started,
        )

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
                model = self._loader.load(name, entry.url, model_dir, disk_bytes(model_dir), until)
            except ServingError as exc:
                log.error("model %s cannot be loaded in this worker: %s", name, exc.message)
                self._failed[name] = [entry.generation, exc.message]
                continue
            model.generation = entry.generation
            self._models[name] = model  # freed at the next turn if unloaded meanwhile

    def _free(self, model: LoadedModel) -> None:
        """Stop giving ``model`` to requests, wait for those in it, free it. Once: a watcher's
        pass may come to a model another greenlet has freed, or is freeing (it waits too)."""
        if self._models.get(model.name) is not model:
            if model.released is not None:
                model.released.wait()
            return
        del self._models[model.name]
        if model.active:
            model.released = Event()
            model.released.wait()
        self._loader.free(model)
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
        model_dir = resolve(url, self.root)
        estimate = disk_bytes(model_dir)
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
            model = self._loader.load(name, url, model_dir, estimate, until)
        except BaseException:
            self._withdraw(name, None)
            raise
        try:
            stale = self._models.get(name)
            if stale is not None:  # unloaded elsewhere, and not freed yet by this worker's
                self._free(stale)  # watcher (it waits on another model's requests)
            with self._store.change() as registry:
                self._room(registry, name, model.footprint)
                generation = registry.generation
                entry = Entry(url, LOADED, self._pid, model.footprint, generation, time.time())
                registry.models[name] = entry
                model.generation = generation
                self._models[name] = model
        except BaseException:
            self._withdraw(name, None)
            self._loader.free(model)
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
            if name not in loaded(registry):
                raise ModelNotFound(f"model {name!r} is not loaded")
            del registry.models[name]
            generation = registry.generation
        self._wait_for_workers(generation, time.monotonic() + self._load_timeout)

    def describe(self, name: str) -> Entry:
        entry = loaded(self._store.read()).get(name)
        if entry is None:
            raise ModelNotFound(f"model {name!r} is not loaded")
        return entry

    def models(self) -> list[tuple[str, Entry]]:
        """The loaded models, by name."""
        return sorted(loaded(self._store.read()).items())

    # -- memory and waiting

    def _room(self, registry: Registry, name: str, footprint: int) -> list[str]:
        last_used = {other: model.last_used for other, model in self._models.items()}
        return self._budget.room(registry, name, footprint, last_used)

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
