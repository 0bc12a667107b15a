"""What happens to an AWS-toolkit-style code folder before any worker starts: its program is
found (``inference`` or ``inference.py``) and its ``requirements.txt`` installed, once, in the
master. Nothing here imports numpy or onnxruntime, so the master stays small.

The toolkit runs ``pip install -r requirements.txt`` into the server's own environment. That
fails on a read-only root file system, and a pin of a package the server uses (numpy) would
replace the server's copy. Here pip installs into a new folder under ``TMPDIR`` (``/tmp``), with
every package already installed held to its version (a constraints file), so that what is
already there is used, not installed again, and a conflicting pin stops the server with pip's
reason instead of changing the server. The folder goes at the end of ``sys.path`` (and of
``PYTHONPATH`` and ``PATH``, for what user code starts); workers fork from the master with it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import site
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

REQUIREMENTS = "requirements.txt"


class RequirementsError(Exception):
    """``requirements.txt`` could not be installed; the message says why."""


def program_path(code_dir: Path, program: str) -> Path:
    """The user module's file: ``program`` names it with or without ``.py``, as for the toolkit."""
    return code_dir / (program if program.endswith(".py") else f"{program}.py")


def installed_constraints() -> str:
    """Every installed distribution pinned to its version, one ``name==version`` a line."""
    pins: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name:
            pins.setdefault(name.lower(), f"{name}=={distribution.version}")
    return "".join(f"{pin}\n" for _, pin in sorted(pins.items()))


def install_requirements(code_dir: Path) -> Path | None:
    """Install ``code_dir/requirements.txt`` (if there is one) into a new folder under the
    temporary directory and put it on ``sys.path``; returns the folder (``None`` without
    requirements). pip runs in ``code_dir``, so relative paths in the file (a wheel shipped
    with the code) are the code's. Raises :class:`RequirementsError` with pip's reason."""
    requirements = code_dir / REQUIREMENTS
    if not requirements.is_file():
        return None
    prefix = Path(tempfile.mkdtemp(prefix="serving-requirements-"))
    constraints = prefix / "installed-constraints.txt"
    constraints.write_text(installed_constraints())
    command = [
        sys.executable, "-m", "pip", "install", "--prefix", str(prefix), "-r", str(requirements),
        "-c", str(constraints), "--no-input", "--disable-pip-version-check",
        "--no-warn-script-location", "--progress-bar", "off",
    ]  # fmt: skip
    log.info("installing %s into %s", requirements, prefix)
    started = time.monotonic()
    errors: list[str] = []
    try:
        process = subprocess.Popen(  # noqa: S603 - pip, with the server's own Python
            command,
            cwd=code_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise RequirementsError(f"cannot run pip to install {requirements}: {exc}") from exc
    assert process.stdout is not None  # PIPE above
    with process:
        for line in process.stdout:
            line = line.rstrip()
            if line:
                log.info("pip: %s", line)
            if line.startswith("ERROR: "):
                errors.append(line.removeprefix("ERROR: "))
    if process.returncode:
        shutil.rmtree(prefix, ignore_errors=True)
        reason = errors[0] if errors else "its output is in the log above"
        raise RequirementsError(
            f"pip could not install {requirements} (exit status {process.returncode}): {reason}"
        )
    sites = sorted(prefix.glob("lib*/python*/site-packages"))
    for site_dir in sites:
        site.addsitedir(str(site_dir))  # appended, and its .pth files read
    _append_environ("PYTHONPATH", [str(s) for s in sites])
    if (prefix / "bin").is_dir():
        _append_environ("PATH", [str(prefix / "bin")])
    log.info("installed %s in %.1f s", requirements, time.monotonic() - started)
    return prefix


def _append_environ(name: str, paths: list[str]) -> None:
    current = [part for part in os.environ.get(name, "").split(os.pathsep) if part]
    if paths:
        os.environ[name] = os.pathsep.join([*current, *paths])
