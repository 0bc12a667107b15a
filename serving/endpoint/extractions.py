"""A multi-model variant's archives: a ``TargetModel`` that names a tar archive of the models
directory (a ``model.tar.gz``, as on SageMaker it names one under the ``ModelDataUrl``
prefix) is extracted on its first use, once, and the container loads the directory it was
extracted to.

That directory is this command's own, and lies inside the models directory
(``.serving-endpoint-PID-RANDOM/NAME``): a container takes a load's ``url`` only inside its
models root, which is the models directory (mounted at ``container_models_dir`` for a
container that runs elsewhere). It is made on the first extraction and removed when the
command stops, or at the next start if the command was killed (:mod:`.held_directories`).
Each archive is checked member by member as a single-model variant's is
(:func:`.archive.extract`); one that is refused, or that is no tar archive, leaves nothing of
it behind, and the next invocation tries it again (the file may have been replaced).

An archive is extracted once for the command's life: one replaced on disk afterwards is not
read again, as SageMaker keeps using the copy it downloaded (give a new model a new name).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import tarfile
from pathlib import Path

from .archive import ArchiveError, Cancelled, extract
from .held_directories import HeldDirectory, remove_abandoned

log = logging.getLogger("serving.endpoint")

#: How the directories of extracted archives begin: a ``TargetModel`` that leads into one
#: names no model.
PREFIX = ".serving-endpoint-"


class Extractions:
    """The archives of one models directory extracted so far, by the model's name."""

    def __init__(self, models_dir: Path) -> None:
        #: The directory's name in the models directory; made on the first extraction.
        self.name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.root = models_dir / self.name
        self._held: HeldDirectory | None = None
        remove_abandoned(models_dir, PREFIX)
        self._extracted: set[str] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    def directory(self, name: str) -> Path:
        """Where the model called ``name`` is extracted."""
        return self.root / name

    def forget(self, name: str) -> None:
        """The container found no directory there (removed by someone): extract it again."""
        self._extracted.discard(name)

    async def extracted(self, archive: Path, name: str) -> None:
        """Return once ``archive`` is extracted into :meth:`directory` (``name``); concurrent
        first uses share one extraction, which goes on if a caller stops waiting.
        :class:`.archive.ArchiveError` when it is refused (nothing of it is left), and
        :class:`.archive.Cancelled` when the command is stopping."""
        if name in self._extracted:
            return
        task = self._running.get(name)
        if task is None:
            task = asyncio.create_task(self._extract(archive, name))
            self._running[name] = task
            task.add_done_callback(lambda done: self._done(name, done))
        await asyncio.shield(task)

    def _done(self, name: str, task: asyncio.Task[None]) -> None:
        if self._running.get(name) is task:
            del self._running[name]
        if not task.cancelled():
            task.exception()  # retrieved: the callers that waited have raised it

    async def _extract(self, archive: Path, name: str) -> None:
        if self._stopping:
            raise Cancelled
        destination = self.directory(name)
        if self._held is None:
            try:
                self._held = HeldDirectory(self.root)
            except OSError as exc:
                raise ArchiveError(f"{archive}: cannot be extracted: {exc}") from None
        try:
            await asyncio.to_thread(self._extract_checked, archive, destination)
        except Exception:
            await asyncio.to_thread(shutil.rmtree, destination, True)
            if not self._extracted and len(self._running) <= 1:  # none but this one
                self._held.remove()
                self._held = None
            raise
        self._extracted.add(name)
        log.info("%s extracted to %s (removed at stop)", archive, destination)

    def _extract_checked(self, archive: Path, destination: Path) -> None:  # in a thread
        try:
            if not tarfile.is_tarfile(archive):
                raise ArchiveError(f"{archive}: not a tar archive (such as a model.tar.gz)")
            extract(archive, destination, lambda: self._stopping)
        except OSError as exc:  # the archive unreadable, or no room for the directory
            raise ArchiveError(f"{archive}: cannot be extracted: {exc}") from None

    async def close(self) -> None:
        """Stop the extractions under way (at their next member) and remove every
        directory extracted."""
        self._stopping = True
        if self._running:
            await asyncio.wait(list(self._running.values()))
        if self._held is not None:
            await asyncio.to_thread(self._held.remove)
            self._held = None
