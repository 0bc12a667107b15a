"""The process model: gunicorn, embedded, with gevent workers serving the WSGI app.

The master binds the port, supervises workers and turns SIGTERM into a graceful stop; it
validates the settings (and the handler's name) before starting, and imports neither Werkzeug
nor numpy, so it stays small. Each worker builds the app and loads its own model after fork;
a worker that cannot exits with gunicorn's boot-error status, which makes the master stop the
whole server, with that status, instead of reporting healthy.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer

from .logs import access_logger, logging_config
from .settings import Settings, SettingsError

if TYPE_CHECKING:
    from .app import ServingApp
    from .flask_integration import FlaskMount
    from .model_store import SharedStore

log = logging.getLogger(__name__)


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return {
        "bind": [f"{host}:{settings.port}"],
        "workers": settings.workers,
        "worker_class": "serving.worker.ServingGeventWorker",
        "timeout": settings.timeout,
        "graceful_timeout": settings.graceful_timeout,
        "keepalive": settings.keepalive,
        "worker_connections": settings.worker_connections,
        "preload_app": False,  # each worker builds the app: the master stays small
        "proc_name": "serving",
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": logging.getLevelName(settings.log_level).lower(),
        "logger_class": access_logger(settings.log_pings),
        "logconfig_dict": logging_config(settings.log_level),
        # A read-only root file system is common for model containers: keep gunicorn's
        # heartbeat files in memory and do not create its control socket under $HOME.
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,  # noqa: S108
        "control_socket_disable": True,
    }


class ServingArbiter(Arbiter):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's master, stopping once. Two workers that cannot load the model fail moments
    apart; the second, reaped while the master stops for the first, would have it stop again
    from inside that stop: a traceback and exit status 1 instead of the boot-error status."""

    stopping = False

    def stop(self, graceful: bool = True) -> None:
        self.stopping = True
        super().stop(graceful)

    def reap_workers(self) -> None:
        try:
            super().reap_workers()
        except HaltServer:
            if not self.stopping:
                raise


class ServingApplication(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn running the app for ``settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker_index = 0  # set in each worker by post_fork
        self.master_pid = os.getpid()
        #: Where the code's requirements.txt was installed, in the master (removed at exit).
        self.requirements_dir: Path | None = None
        #: What a multi-model server's workers agree on, made before they fork.
        self.store: SharedStore | None = None
        if settings.multi_model:
            from .model_store import SharedStore

            self.store = SharedStore.create()
        super().__init__()

    def load_config(self) -> None:
        options = gunicorn_options(self.settings)
        options["on_starting"] = self.on_starting
        options["pre_fork"] = self.pre_fork
        options["post_fork"] = self.post_fork
        options["post_worker_init"] = self.post_worker_init
        for key, value in options.items():
            if value is not None:
                self.cfg.set(key, value)

    def run(self) -> None:
        """As gunicorn's ``BaseApplication.run``, with :class:`ServingArbiter`."""
        try:
            ServingArbiter(self).run()
        except RuntimeError as exc:
            print(f"\nError: {exc}\n", file=sys.stderr, flush=True)
            sys.exit(1)
        finally:
            if self.store is not None and os.getpid() == self.store.master:
                self.store.remove()
            if self.requirements_dir is not None and os.getpid() == self.master_pid:
                shutil.rmtree(self.requirements_dir, ignore_errors=True)

    def load(self) -> ServingApp | FlaskMount:
        """Build the app, in a worker (behind the user's Flask app when one is named)."""
        from .app import create_app

        try:
            app = create_app(self.settings, worker_index=self.worker_index, store=self.store)
            if self.settings.flask_app is None:
                return app
            from .flask_integration import FlaskMount, import_app

            return FlaskMount(app, import_app(self.settings.flask_app))
        except SettingsError as exc:  # e.g. a broken codec plugin: stop, do not retry
            log.error("invalid configuration: %s", exc)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def pre_fork(self, arbiter: Arbiter, worker: Any) -> None:
        """Give the worker the lowest slot no live worker holds, in the master: a replacement
        takes the slot, and so the GPU, of the worker it replaces. (gunicorn's ``age`` only
        grows, so replacements numbered by it could pile onto one GPU.)"""
        taken = {getattr(live, "slot", None) for live in arbiter.WORKERS.values()}
        worker.slot = next(slot for slot in itertools.count() if slot not in taken)

    def post_fork(self, arbiter: Arbiter, worker: Any) -> None:
        self.worker_index = worker.slot

    def on_starting(self, arbiter: Arbiter) -> None:
        log.info("configuration: %s", self.settings.describe())
        self.install_requirements()

    def install_requirements(self) -> None:
        """The code folder's ``requirements.txt``, installed once, here in the master, before
        any worker imports the code; a failure stops the server with pip's reason."""
        from handlers.toolkit_setup import RequirementsError, install_requirements

        from .startup import handler_name

        settings = self.settings
        if not settings.install_requirements or handler_name(settings) == "onnx":
            return
        try:
            self.requirements_dir = install_requirements(
                settings.code_dir or settings.model_dir / "code"
            )
        except RequirementsError as exc:
            log.error("cannot install the code's requirements: %s", exc)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def post_worker_init(self, worker: Any) -> None:
        from handlers.errors import ModelLoadError

        from .app import load_model

        try:
            load_model(worker.wsgi)
            # Everything alive now lives as long as the worker: keep the garbage collector
            # from walking it again and again (full collections of a big heap are pauses of
            # tens of milliseconds, straight into the tail latency).
            gc.collect()
            gc.freeze()
        except ModelLoadError as exc:
            log.error("cannot load the model: %s", exc)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        except Exception:
            log.exception("cannot load the model")
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


def serve(settings: Settings) -> None:
    """Run the server until it is stopped; exits non-zero if a worker cannot load its model."""
    if not settings.onnxruntime_telemetry:
        # Read by onnxruntime when it starts, in each worker: no device id written to
        # $HOME/.cache (a read-only root made every worker print a warning), nothing sent.
        os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    ServingApplication(settings).run()
