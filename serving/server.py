"""The process model: gunicorn, embedded, with gevent workers serving the Flask app.

The master binds the port, supervises workers and turns SIGTERM into a graceful stop. The
app is created in the master (so bad settings stop the server before any fork); each worker
loads its own model after fork, and a worker that cannot exits with gunicorn's boot-error
status, which makes the master stop the whole server instead of reporting healthy.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from handlers.errors import ModelLoadError

from .app import load_model
from .logs import access_logger, logging_config
from .settings import Settings

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
        "preload_app": True,
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


class ServingApplication(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn running ``app`` under ``settings``."""

    def __init__(self, app: Flask, settings: Settings) -> None:
        self.application = app
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        options = gunicorn_options(self.settings)
        options["on_starting"] = self.on_starting
        options["post_worker_init"] = self.post_worker_init
        for key, value in options.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.application

    def on_starting(self, arbiter: Arbiter) -> None:
        log.info("configuration: %s", self.settings.describe())

    def post_worker_init(self, worker: Any) -> None:
        try:
            load_model(self.application)
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


def serve(app: Flask, settings: Settings) -> None:
    """Run the server until it is stopped; exits non-zero if a worker cannot load its model."""
    ServingApplication(app, settings).run()
