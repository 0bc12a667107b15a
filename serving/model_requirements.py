"""A multi-model endpoint's answer to a model's ``code/requirements.txt``: load the model if
what it asks for is installed already, else refuse the load, naming what is missing.

Single-model mode installs the file once, in the master, before any worker starts
(:mod:`handlers.toolkit_setup`). A multi-model endpoint does not install at load:

* every model's code runs in one Python process per worker, so a package one model installs
  is every model's, and the version imported first is the one all of them get: a model's pin
  cannot be honoured apart from the others';
* pip at load time runs in every worker (or races them), counts against SageMaker's load
  time, and needs an index that an endpoint in a VPC usually cannot reach;
* a multi-model endpoint is many models of one kind sharing an image: their dependencies
  belong in that image, built once.

So a requirement the server's environment already satisfies (``numpy``, ``numpy>=1.20``) is
fine, and anything else (a missing package, another version, a URL or a pip option) is a 400
that names the file and the lines. ``SERVING_INSTALL_REQUIREMENTS=false`` skips the check (the
image has what the models need, whatever their files say).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from handlers.errors import ModelLoadError

REQUIREMENTS = "requirements.txt"


def unmet(requirements: Path) -> list[str]:
    """The lines of ``requirements`` that the installed packages do not satisfy."""
    missing = []
    for raw in requirements.read_text(errors="replace").splitlines():
        line = raw.partition(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if not _satisfied(line):
            missing.append(line)
    return missing


def _satisfied(line: str) -> bool:
    try:
        requirement = Requirement(line)
    except InvalidRequirement:  # a pip option, a path or a URL: nothing to check it against
        return False
    if requirement.url is not None:
        return False
    if requirement.marker is not None and not requirement.marker.evaluate():
        return True  # not for this platform
    try:
        version = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return requirement.specifier.contains(version, prereleases=True)


def check(code_dir: Path) -> None:
    """:class:`ModelLoadError` if ``code_dir/requirements.txt`` asks for what is not installed."""
    requirements = code_dir / REQUIREMENTS
    if not requirements.is_file():
        return
    missing = unmet(requirements)
    if missing:
        raise ModelLoadError(
            f"{requirements} asks for what this server does not have: {', '.join(missing)}; "
            "a multi-model endpoint installs nothing at load (one environment serves every "
            "model): install it in the image, or set SERVING_INSTALL_REQUIREMENTS=false if "
            "the image has what the model needs"
        )
