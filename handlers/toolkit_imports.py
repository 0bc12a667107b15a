"""Importing a code folder's module (``inference.py``) and its helpers apart from everything
else in the process: the server's own packages, installed ones, and other code folders (a
multi-model endpoint's models may each have an ``inference.py`` and a ``utils.py``).

While a :class:`UserCode` is *active* (its module's import, and its ``model_fn`` and the other
loading hooks) its folder is first on ``sys.path`` and the names of its modules (``utils``,
even ``handlers`` or ``serving``, which are the server's) are its own in ``sys.modules``; what
held those names before is put back afterwards. So ``import utils`` at the top of each
``inference.py``, and a pickle that names ``utils.MyScaler`` in ``model_fn``, find the folder's
own. Afterwards the folder leaves ``sys.path``; its modules keep their plain names in
``sys.modules`` (so a later import in a hook, or a pickle read at request time, still finds
them) unless another code folder or the server has a module of that name; every one of them
is also kept under an alias of the folder's own (``_user_code_<digest>.utils``).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from .errors import ModelLoadError
from .toolkit_setup import program_path

#: One import of user code at a time: sys.path and sys.modules are the process's.
_LOCK = threading.RLock()
#: Top-level module names each loaded code folder has imported, by folder.
_IMPORTED: dict[Path, set[str]] = {}


def module_names(code_dir: Path) -> set[str]:
    """Top-level modules the folder holds: ``*.py`` files and packages (folders with an
    ``__init__.py``)."""
    try:
        entries = list(code_dir.iterdir())
    except OSError:
        return set()
    names = {e.stem for e in entries if e.suffix == ".py" and e.is_file()}
    names |= {e.name for e in entries if e.is_dir() and (e / "__init__.py").is_file()}
    return {name for name in names if name.isidentifier()}


def _top(name: str) -> str:
    return name.partition(".")[0]


def _in(module: ModuleType | None, folder: Path) -> bool:
    path = getattr(module, "__file__", None)
    return isinstance(path, str) and path.startswith(f"{folder}{os.sep}")


def _folder_of(module: ModuleType | None) -> Path | None:
    """The loaded code folder ``module`` comes from, if any."""
    return next((folder for folder in _IMPORTED if _in(module, folder)), None)


class _LaterImports(importlib.abc.MetaPathFinder):
    """Last on ``sys.meta_path``: a top-level module no installed package has, that exactly one
    loaded code folder holds (a hook's ``import utils`` after loading, or a pickle's class)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if path is not None:  # a submodule: its package's own path finds it
            return None
        folders = [folder for folder in list(_IMPORTED) if fullname in module_names(folder)]
        if len(folders) > 1:
            # Which one the importer meant is not known here: say so, rather than "No module".
            raise ImportError(
                f"{fullname} is a module of several code folders ({', '.join(map(str, folders))}): "
                "import it at the top of the user module, where each folder gets its own",
                name=fullname,
            )
        if not folders:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [str(folders[0])])


class UserCode:
    """One code folder; see the module docstring."""

    def __init__(self, code_dir: Path) -> None:
        self.code_dir = code_dir.resolve()
        digest = hashlib.sha1(str(self.code_dir).encode()).hexdigest()[:10]  # noqa: S324
        #: The prefix its user module is registered under in ``sys.modules``.
        self.prefix = f"_user_code_{digest}"

    @contextmanager
    def active(self) -> Iterator[None]:
        """The folder first on ``sys.path`` and its modules under their plain names."""
        with _LOCK:
            if not any(isinstance(finder, _LaterImports) for finder in sys.meta_path):
                sys.meta_path.append(_LaterImports())
            _IMPORTED.setdefault(self.code_dir, set())
            own = module_names(self.code_dir) | _IMPORTED[self.code_dir]
            stashed = {
                name: module
                for name, module in list(sys.modules.items())
                if _top(name) in own and not self._holds(module)
            }
            for name in stashed:
                del sys.modules[name]
            aliases = f"{self.prefix}."
            for name, module in list(sys.modules.items()):
                if name.startswith(aliases):
                    sys.modules[name.removeprefix(aliases)] = module
            sys.path.insert(0, str(self.code_dir))
            try:
                yield
            finally:
                sys.path.remove(str(self.code_dir))
                self._settle(stashed)

    def _holds(self, module: ModuleType | None) -> bool:
        return _in(module, self.code_dir)

    def _settle(self, stashed: dict[str, ModuleType]) -> None:
        """After being active: the folder's modules kept under aliases; what held their names
        given back; a plain name kept only where no one else claims it."""
        mine = {
            name: module
            for name, module in list(sys.modules.items())
            if self._holds(module) and not name.startswith(self.prefix)
        }
        imported = _IMPORTED.setdefault(self.code_dir, set())
        for name, module in mine.items():
            sys.modules[f"{self.prefix}.{name}"] = module
            imported.add(_top(name))
            del sys.modules[name]
        others = {n for dir_, names in _IMPORTED.items() if dir_ != self.code_dir for n in names}
        for name, module in stashed.items():
            folder = _folder_of(module)
            if folder is None or folder == self.code_dir or _top(name) not in imported:
                sys.modules[name] = module  # the server's, or another folder's alone
        for name, module in mine.items():
            if name not in sys.modules and _top(name) not in others:
                sys.modules[name] = module  # nobody else has it: later imports find it

    def import_module(self, program: str) -> ModuleType:
        """Import ``program`` (``inference`` or ``inference.py``) from the folder; the caller
        should hold :meth:`active` around it and the loading hooks."""
        path = program_path(self.code_dir, program)
        if not path.is_file():
            raise ModelLoadError(f"user module {path} does not exist")
        name = path.stem
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ModelLoadError(f"{path} cannot be imported as a module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # under its own name while it runs, as the toolkit has it
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # user code: report where it failed, then stop the worker
            del sys.modules[name]
            raise ModelLoadError(
                f"{path} failed to import ({_where(exc, self.code_dir)}): "
                f"{type(exc).__name__}: {exc}{_clash_hint(exc, self.code_dir)}"
            ) from exc
        return module


def import_user_module(code_dir: Path, program: str) -> ModuleType:
    """Import ``program`` from ``code_dir``, isolated from other code folders (see the module
    docstring). Two folders load side by side by calling this once for each."""
    code = UserCode(code_dir)
    with code.active():
        return code.import_module(program)


def _where(exc: Exception, code_dir: Path) -> str:
    """``file line N`` of the user's code where ``exc`` was raised (or the last frame)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{Path(exc.filename).name} line {exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    user_frames = [f for f in frames if Path(f.filename).resolve().is_relative_to(code_dir)]
    frame = (user_frames or frames)[-1]
    return f"{Path(frame.filename).name} line {frame.lineno}"


def _clash_hint(exc: Exception, code_dir: Path) -> str:
    """For an import that failed on a name the folder's module shares with an installed
    package: which, and what to do."""
    if not isinstance(exc, ImportError) or not exc.name:
        return ""
    top = _top(exc.name)
    if top not in module_names(code_dir):
        return ""
    return (
        f" ({top} is both a module of {code_dir} and an installed package; "
        f"the code's own {top} was imported: rename it if the package was meant)"
    )
