"""A ``model.tar.gz``, as SageMaker takes a model (``ModelDataUrl``): extracted before its
container starts, into a directory of this command's that is removed when it stops.

An archive is untrusted input: every member is checked before it is written, and the archive
is refused, naming the member, if one would land outside the directory (an absolute name, a
``..``, a path through a link), if a link points outside it, or if it is anything but a file,
a directory or a link (a device, a FIFO). The checks resolve each destination on disk as it is
at that point of the extraction, so a chain of links that only leads out once its earlier
links exist is caught too. Where Python has it (3.11.4 and later), tarfile's ``data`` filter
checks once more and drops what a model needs not (set-uid bits, owners); before, the same is
done here.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from pathlib import Path

_DATA_FILTER = getattr(tarfile, "data_filter", None)
_FILTER_ERRORS: tuple[type[Exception], ...] = (
    (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()
)


class ArchiveError(Exception):
    """The archive cannot be used; the message names it and says why."""


class Cancelled(Exception):
    """The extraction was stopped (the command is stopping)."""


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a file that tarfile reads (gzip, bzip2, xz or plain tar)."""
    return path.is_file() and tarfile.is_tarfile(path)


def extract(archive: Path, destination: Path, stopped: Callable[[], bool] = lambda: False) -> None:
    """Extract ``archive`` into the directory ``destination`` (made if missing), member by
    member, checking each first; :class:`ArchiveError` at the first refused member (what was
    written stays in ``destination``, for the caller to remove), :class:`Cancelled` when
    ``stopped()`` turns true between two members."""
    destination.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(destination)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if stopped():
                    raise Cancelled
                _check(member, root)
                if _DATA_FILTER is not None:
                    tar.extract(member, root, filter="data")
                else:  # Python < 3.11.4
                    tar.extract(member, root, set_attrs=False)  # no owner from the archive
                    _restrict(member, root)
    except _FILTER_ERRORS as exc:  # caught by the filter rather than by _check: refused too
        raise ArchiveError(f"{archive}: refused: {exc}") from None
    except _Refused as exc:
        raise ArchiveError(f"{archive}: member {exc.member!r} refused: {exc.reason}") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(f"{archive}: cannot be extracted: {exc}") from None


class _Refused(Exception):
    def __init__(self, member: str, reason: str) -> None:
        super().__init__(reason)
        self.member = member
        self.reason = reason


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _check(member: tarfile.TarInfo, root: str) -> None:
    name = member.name
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise _Refused(name, "not a file, directory or link (a device or FIFO)")
    if name.startswith("/") or os.path.isabs(name):
        raise _Refused(name, "an absolute path")
    if ".." in name.split("/"):
        raise _Refused(name, "a path with '..'")
    # resolved on disk as extracted so far: a name through a link that leads out is out
    target = os.path.realpath(os.path.join(root, name))
    if not _inside(target, root):
        raise _Refused(name, "it would be written outside the model directory")
    if target == root and not member.isdir():
        raise _Refused(name, "it would replace the model directory")
    if member.issym():
        if os.path.isabs(member.linkname):
            raise _Refused(name, f"a link to the absolute path {member.linkname!r}")
        linked = os.path.join(root, os.path.dirname(name), member.linkname)
    elif member.islnk():  # a hard link names its target from the archive's root
        linked = os.path.join(root, member.linkname)
    else:
        return
    if not _inside(os.path.realpath(linked), root):
        raise _Refused(name, f"a link to {member.linkname!r}, outside the model directory")


def _restrict(member: tarfile.TarInfo, root: str) -> None:
    """What the ``data`` filter does to modes: no set-uid, set-gid, sticky or other's write."""
    if member.issym():
        return
    path = os.path.join(root, member.name)
    mode = member.mode & 0o755 | (0o700 if member.isdir() else 0o600)
    os.chmod(path, mode)
