"""Multi-model variants: ``TargetModel`` as SageMaker's front end takes it.

On SageMaker, ``TargetModel`` is the path of a ``model.tar.gz`` relative to the variant's
``ModelDataUrl`` prefix; the platform copies it to the instance, asks the container to load it
under an opaque name (a hash) on its first use, and when the container answers a load with 507
it unloads the least recently used model and tries again. Here the prefix is a local models
directory, and a model is a tar archive in it, extracted on its first use
(:mod:`.extractions`), or a directory in it, used in place: ``TargetModel`` ``a/b.tar.gz`` is
the archive ``<models_dir>/a/b.tar.gz``, or when there is none the directory
``<models_dir>/a/b``.

The API keeps, per container, which models it has loaded and when each was last used; the
container is the authority (its 404 for an invoke means "not loaded": a restarted container has
lost its models), so a belief that turns out wrong costs one load more, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import posixpath
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .extractions import PREFIX as EXTRACTED_PREFIX
from .extractions import Extractions
from .replies import Reply
from .upstream import Container

log = logging.getLogger("serving.endpoint")

#: Seconds a load may take (SageMaker goes on loading for up to 360 s after the invocation
#: that asked for it has timed out with ModelNotReadyException).
LOAD_TIMEOUT = 360.0
#: Seconds an unload may take.
UNLOAD_TIMEOUT = 60.0

ARCHIVE_SUFFIX = ".tar.gz"


@dataclass(frozen=True)
class Target:
    """A model of a models directory, and how its container knows it."""

    #: Its path in the models directory, ``/``-separated: an archive's with its suffix, a
    #: directory's without ``.tar.gz``.
    relative: str
    #: The container's ``model_name``: opaque, as SageMaker's (a hash of ``relative``).
    name: str
    #: The load's ``url``: where the container reads the model directory.
    url: str
    #: The archive to extract (into :meth:`.Extractions.directory`) before the load.
    archive: Path | None = None


class ModelsDir:
    """A multi-model variant's models directory, seen here (``local``) and by its container
    (``container_root``, the load's ``url`` prefix), and the archives of it extracted."""

    def __init__(self, local: Path, container_root: str) -> None:
        self.local = local.resolve()
        self.container_root = container_root
        self.extractions = Extractions(self.local)

    def target(self, target_model: str) -> Target | None:
        """The model ``target_model`` names, or ``None`` when there is no such archive or
        directory (or the name leads out of the models directory)."""
        path = PurePosixPath(target_model)
        if path.is_absolute() or ".." in path.parts or "\\" in target_model:
            return None
        relative = target_model.strip("/")
        exact = self._inside(relative)
        if exact is not None and exact.is_dir():  # a directory called "a.tar.gz" too
            return self._directory(exact)
        if exact is not None and exact.is_file():
            key = exact.relative_to(self.local).as_posix()
            name = _name(key)
            url = posixpath.join(self.container_root, self.extractions.name, name)
            return Target(key, name, url, exact)
        if relative.endswith(ARCHIVE_SUFFIX):  # no such archive: the directory it names
            directory = self._inside(relative.removesuffix(ARCHIVE_SUFFIX))
            if directory is not None and directory.is_dir():
                return self._directory(directory)
        return None

    def _inside(self, relative: str) -> Path | None:
        """``relative`` resolved (links followed), if it is inside the models directory but
        neither the directory itself nor in a directory of extracted archives."""
        if not relative:
            return None
        resolved = (self.local / relative).resolve()
        if resolved == self.local or not resolved.is_relative_to(self.local):
            return None
        if resolved.relative_to(self.local).parts[0].startswith(EXTRACTED_PREFIX):
            return None
        return resolved

    def _directory(self, directory: Path) -> Target:
        # named by the directory the container resolves it to, so that a link and its
        # target, or a.tar.gz and a, are one model
        key = directory.relative_to(self.local).as_posix()
        return Target(key, _name(key), posixpath.join(self.container_root, key))

    async def close(self) -> None:
        """Remove the archives extracted (the command is stopping)."""
        await self.extractions.close()


def _name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class LoadFailed(Exception):
    """The container refused a load (or an unload it needed) with ``reply``."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"status {reply.status}")
        self.reply = reply


class NotFound(Exception):
    """The container found no model directory at the load's url (404)."""


class ContainerModels:
    """The models one multi-model container has loaded, as far as this API knows, in order of
    last use; their loads, one at a time; and the unloads that make room for them.

    A new one is made whenever the container is replaced: a new container has no model."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.loaded: OrderedDict[str, Target] = OrderedDict()
        self.in_flight: Counter[str] = Counter()
        self._loads: dict[str, asyncio.Task[None]] = {}
        # One load at a time: each 507 is answered by unloading for that load alone, and
        # the container loads one model at a time anyway.
        self._loading = asyncio.Lock()

    def used(self, target: Target) -> None:
        if target.name in self.loaded:
            self.loaded.move_to_end(target.name)

    def forget(self, target: Target) -> None:
        """The container does not have ``target`` (it said so): load it again next time."""
        self.loaded.pop(target.name, None)

    async def ensure_loaded(self, target: Target) -> None:
        """Return once the container has ``target`` loaded; concurrent first uses share one
        load, which goes on if a caller stops waiting (as SageMaker's does after a
        ModelNotReadyException)."""
        task = self._loads.get(target.name)
        if task is None:
            task = asyncio.create_task(self._load(target))
            self._loads[target.name] = task
            task.add_done_callback(lambda done: self._done(target.name, done))
        await asyncio.shield(task)

    def _done(self, name: str, task: asyncio.Task[None]) -> None:
        if self._loads.get(name) is task:
            del self._loads[name]
        if not task.cancelled():
            task.exception()  # retrieved: the callers that waited have raised it

    async def _load(self, target: Target) -> None:
        async with self._loading:
            if target.name in self.loaded:
                return
            body = json.dumps({"model_name": target.name, "url": target.url}).encode()
            head = (
                f"POST /models HTTP/1.1\r\nHost: {self.container.host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            while True:
                reply = await self.container.request([head.encode(), body], LOAD_TIMEOUT)
                if reply.status in (200, 409):  # 409: it had it (this API restarted, say)
                    log.info(
                        "%s: model %s loaded as %s", self.container.url, target.relative,
                        target.name,
                    )  # fmt: skip
                    self.loaded[target.name] = target
                    return
                if reply.status == 404:
                    raise NotFound(target.url)
                if reply.status != 507:
                    raise LoadFailed(reply)
                victim = self._least_recently_used(target)
                if victim is None:
                    raise LoadFailed(reply)  # nothing left to unload: it cannot fit
                log.info(
                    "%s: model %s unloaded (least recently used) to make room for %s",
                    self.container.url, victim.relative, target.relative,
                )  # fmt: skip
                await self._unload(victim)

    def _least_recently_used(self, loading: Target) -> Target | None:
        """The model to unload: the least recently used of those with no request in flight,
        else of all (the container lets requests in flight finish before it frees one)."""
        others = [target for name, target in self.loaded.items() if name != loading.name]
        idle = [target for target in others if not self.in_flight[target.name]]
        candidates = idle or others
        return candidates[0] if candidates else None

    async def _unload(self, target: Target) -> None:
        # forgotten first: a request for it meanwhile waits to load it again
        self.loaded.pop(target.name, None)
        head = f"DELETE /models/{target.name} HTTP/1.1\r\nHost: {self.container.host}\r\n\r\n"
        reply = await self.container.request([head.encode()], UNLOAD_TIMEOUT)
        if reply.status not in (200, 404):  # 404: it was gone already
            raise LoadFailed(reply)
