"""Directories this command extracts archives into, held for its life, and those that runs
killed with SIGKILL left behind.

A held directory has a lock file inside it, locked (``flock``, exclusive) by the command that
made it until it stops. The kernel releases the lock however the command ends, SIGKILL
included, so a directory of ours whose lock can be taken belongs to no running command, on
this machine or in another container sharing the filesystem (where process ids say nothing),
and the next start removes it. A directory without the lock file (one being made, or one a
version before this left) is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("serving.endpoint")

#: The lock file inside a held directory.
LOCK_NAME = ".held"


class HeldDirectory:
    """A directory and the lock that holds it; :meth:`remove` removes both."""

    def __init__(self, path: Path) -> None:
        """Make ``path`` (its parent must exist) and hold it; ``OSError`` if it cannot be.

        It is made and locked under another name, then renamed: under its own name it is
        never without its lock, which another command's start would take for abandoned."""
        making = path.parent / f".making-{path.name}"
        making.mkdir()
        lock = -1
        try:
            lock = os.open(making / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(lock, fcntl.LOCK_EX)
            making.rename(path)
        except OSError:
            if lock >= 0:
                os.close(lock)
            shutil.rmtree(making, ignore_errors=True)
            raise
        self._lock = lock
        self.path = path

    def remove(self) -> None:
        """Remove the directory and everything in it, then let the lock go."""
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.close(self._lock)


def remove_abandoned(parent: Path, prefix: str) -> list[Path]:
    """Remove the directories in ``parent`` whose names begin with ``prefix`` and whose lock
    no running command holds; returns them."""
    try:
        candidates = [entry for entry in parent.iterdir() if entry.name.startswith(prefix)]
    except OSError:
        return []
    removed = []
    for directory in candidates:
        if _abandoned(directory):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
            log.info("removed %s, left behind by a run that was killed", directory)
    return removed


def _abandoned(directory: Path) -> bool:
    try:
        lock = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:  # no lock file, not a directory, not ours to open
        return False
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: its command runs
        return False
    finally:
        os.close(lock)  # lets the lock go again, if it was taken
    return True
