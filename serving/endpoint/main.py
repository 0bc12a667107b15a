"""``serving endpoint``: extract the model archives, start (or reach) the containers, wait for
their /ping, serve the API until SIGTERM or SIGINT, then stop the API and the containers it
started, and remove what it extracted."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from .archive import ArchiveError, Cancelled, extract
from .config import EndpointConfig
from .connection import Connections
from .containers import StartFailed, Variant
from .held_directories import HeldDirectory, remove_abandoned
from .service import Service
from .settings import EndpointSettings

log = logging.getLogger("serving.endpoint")

#: How the directories that variants' model.tar.gz are extracted into begin (in the
#: temporary directory).
SCRATCH_PREFIX = "serving-endpoint-"

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

#: What ``serving endpoint``'s exit status means.
EXIT_STATUSES = {
    0: "stopped by SIGTERM or SIGINT",
    1: "could not listen on the API's port",
    2: "invalid settings or configuration, or a model.tar.gz refused",
    3: "a container did not become healthy (the reason is logged)",
}


def run(settings: EndpointSettings, endpoints: tuple[EndpointConfig, ...]) -> int:
    """Serve until stopped; returns the exit status."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    log.addHandler(handler)
    log.setLevel(settings.log_level)
    log.propagate = False
    return asyncio.run(_serve(settings, endpoints))


async def _serve(settings: EndpointSettings, configs: tuple[EndpointConfig, ...]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if all(variant.model_archive is None for config in configs for variant in config.variants):
        return await _run(settings, configs, stop)
    temporary = Path(tempfile.gettempdir())
    remove_abandoned(temporary, SCRATCH_PREFIX)
    try:
        scratch = HeldDirectory(temporary / f"{SCRATCH_PREFIX}{secrets.token_hex(8)}")
    except OSError as exc:
        log.error("cannot make a directory to extract model.tar.gz into: %s", exc)
        return 2
    try:
        try:
            configs = await _extract(configs, scratch.path, stop)
        except ArchiveError as exc:
            log.error("%s", exc)
            return 2
        except Cancelled:
            return 0
        return await _run(settings, configs, stop)
    finally:
        scratch.remove()


async def _extract(
    configs: tuple[EndpointConfig, ...], scratch: Path, stop: asyncio.Event
) -> tuple[EndpointConfig, ...]:
    """The configuration with each variant's model.tar.gz extracted into a directory of
    ``scratch`` (in a thread: the loop still takes signals, and a stop ends it)."""
    extracted = []
    for config in configs:
        variants = []
        for variant in config.variants:
            if variant.model_archive is not None:
                directory = scratch / f"{config.name}.{variant.name}"
                await asyncio.to_thread(extract, variant.model_archive, directory, stop.is_set)
                log.info(
                    "variant %s of endpoint %s: %s extracted to %s (removed at stop)",
                    variant.name, config.name, variant.model_archive, directory,
                )  # fmt: skip
                variant = dataclasses.replace(variant, model_dir=directory)
            variants.append(variant)
        extracted.append(dataclasses.replace(config, variants=tuple(variants)))
    return tuple(extracted)


async def _run(
    settings: EndpointSettings, configs: tuple[EndpointConfig, ...], stop: asyncio.Event
) -> int:
    loop = asyncio.get_running_loop()
    endpoints = {
        config.name: [Variant(config.name, v, settings.start_timeout) for v in config.variants]
        for config in configs
    }
    variants = [variant for listed in endpoints.values() for variant in listed]
    connections = Connections(Service(settings, endpoints).start, settings.max_payload_bytes)
    try:
        server = await loop.create_server(
            connections.protocol, settings.host, settings.port, start_serving=False
        )
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror)
        return 1
    try:
        if not await _start(variants, stop):
            return 3
        if stop.is_set():
            return 0
        await server.start_serving()
        host, port = server.sockets[0].getsockname()[:2]
        names = ", ".join(endpoints)
        log.info("InvokeEndpoint for %s at http://%s:%d (endpoint_url)", names, host, port)
        await stop.wait()
        log.info("stopping")
        server.close()
        connections.stop()
        try:
            await asyncio.wait_for(connections.all_closed.wait(), settings.timeout + 5)
        except TimeoutError:
            log.error("%d connections still busy; closing them", len(connections.open))
    finally:
        server.close()
        await asyncio.gather(*(variant.stop() for variant in variants))
    log.info("stopped")
    return 0


async def _start(variants: list[Variant], stop: asyncio.Event) -> bool:
    """Start every variant's container; ``False`` (logged) when one cannot start."""
    starting: asyncio.Future[list[BaseException | None]] = asyncio.gather(
        *(variant.start() for variant in variants), return_exceptions=True
    )
    stopped = asyncio.ensure_future(stop.wait())
    waited: list[asyncio.Future[Any]] = [starting, stopped]
    await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        await asyncio.gather(*(variant.stop() for variant in variants))
    stopped.cancel()
    results = await starting
    failed = [result for result in results if isinstance(result, BaseException)]
    for failure in failed:
        if not isinstance(failure, StartFailed):
            raise failure
        if not stop.is_set():
            log.error("%s", failure)
    return stop.is_set() or not failed
