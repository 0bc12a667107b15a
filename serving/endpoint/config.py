"""Endpoints and their production variants: from the command line (one endpoint, one
variant named ``AllTraffic``) or from a TOML file, checked whole before anything starts.

A TOML file names endpoints and, under each, its variants, as ``CreateEndpointConfig``'s
``ProductionVariants`` do::

    [endpoints.iris.variants.blue]
    model_dir = "examples/iris/model"      # started with `serving serve`, relative to this file;
                                           # a model.tar.gz is extracted first
    weight = 3                             # InitialVariantWeight (default 1)
    environment = { SAGEMAKER_MODEL_SERVER_WORKERS = "1" }

    [endpoints.iris.variants.green]
    container_url = "http://127.0.0.1:8080"   # a container already running
    weight = 1

    [endpoints.many.variants.AllTraffic]
    models_dir = "models"                  # multi-model: `serving serve --multi-model`

    [endpoints.docker.variants.AllTraffic]  # a multi-model container already running,
    container_url = "http://127.0.0.1:8081" # which reads the models directory at
    models_dir = "models"                   # /opt/ml/models (docker run -v ...)
    container_models_dir = "/opt/ml/models"
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..settings import SettingsError
from .api import _NAME, NAME_PATTERN
from .archive import is_archive
from .settings import EndpointSettings, _url

DEFAULT_VARIANT = "AllTraffic"

_VARIANT_KEYS = {
    "model_dir", "models_dir", "container_url", "container_models_dir", "weight", "environment"
}  # fmt: skip
_SOURCES = frozenset({"model_dir", "models_dir", "container_url"})
#: What a variant's container may be described by: a model directory to start a container
#: for, a models directory to start a multi-model one for, a running container's URL, or a
#: running multi-model container's URL and the models directory it reads.
_SOURCE_SETS = {
    frozenset({"model_dir"}),
    frozenset({"models_dir"}),
    frozenset({"container_url"}),
    frozenset({"container_url", "models_dir"}),
}


class ConfigError(SettingsError):
    """The endpoints' configuration is invalid; the message says where and why."""


@dataclass(frozen=True)
class VariantConfig:
    name: str
    #: A model directory to start ``serving serve`` for; ``None`` with ``container_url``, or
    #: with ``model_archive`` until the command has extracted it.
    model_dir: Path | None
    container_url: str | None
    weight: float = 1.0
    #: Added to the started container's environment (a SageMaker Model's ``Environment``).
    environment: Mapping[str, str] = field(default_factory=dict)
    #: A multi-model variant's models directory (resolved): TargetModel names a model in it.
    models_dir: Path | None = None
    #: Where the container reads ``models_dir`` (its load's ``url`` prefix): the same path
    #: unless the container sees it elsewhere (``docker run -v DIR:/opt/ml/models``).
    container_models_dir: str | None = None
    #: A ``model.tar.gz`` (resolved) to extract, then serve as ``model_dir``.
    model_archive: Path | None = None

    @property
    def multi_model(self) -> bool:
        return self.models_dir is not None


@dataclass(frozen=True)
class EndpointConfig:
    name: str
    variants: tuple[VariantConfig, ...]


def check_name(kind: str, name: str) -> None:
    if not (len(name) <= 63 and _NAME.match(name)):
        raise ConfigError(
            f"{kind} name {name!r} is not 1-63 characters of {NAME_PATTERN} (as SageMaker requires)"
        )


def endpoints(settings: EndpointSettings, name: str | None) -> tuple[EndpointConfig, ...]:
    """The endpoints ``settings`` and the command's NAME describe."""
    if settings.config is not None:
        if name is not None or settings.model_dir or settings.models_dir or settings.container_url:
            raise ConfigError(
                "--config describes the endpoints: give it without NAME, --model-dir, "
                "--models-dir or --container-url"
            )
        return load(settings.config)
    if name is None:
        raise ConfigError(
            "give an endpoint NAME (with --model-dir, --models-dir or --container-url), or --config"
        )
    check_name("endpoint", name)
    given = {
        key
        for key, value in (
            ("model_dir", settings.model_dir),
            ("models_dir", settings.models_dir),
            ("container_url", settings.container_url),
        )
        if value is not None
    }
    if frozenset(given) not in _SOURCE_SETS:
        raise ConfigError(
            "give one of --model-dir, --models-dir and --container-url (or --container-url "
            "with --models-dir, for a multi-model container already running)"
        )
    model_dir, model_archive = _model("--model-dir", settings.model_dir)
    models_dir = _models_dir("--models-dir", settings.models_dir)
    variant = VariantConfig(
        DEFAULT_VARIANT,
        model_dir,
        settings.container_url,
        models_dir=models_dir,
        container_models_dir=str(models_dir) if models_dir is not None else None,
        model_archive=model_archive,
    )
    return (EndpointConfig(name, (variant,)),)


def _model(where: str, path: Path | None) -> tuple[Path | None, Path | None]:
    """A variant's model, as (directory, archive): a model directory, or a tar archive (a
    ``model.tar.gz``, as SageMaker's ``ModelDataUrl`` names) to extract before its start."""
    if path is None or path.is_dir():
        return path, None
    if is_archive(path):
        return None, path.resolve()
    if path.exists():
        raise ConfigError(f"{where}: {path} is neither a model directory nor a model.tar.gz")
    raise ConfigError(f"{where}: model directory {path} does not exist")


def _models_dir(where: str, path: Path | None) -> Path | None:
    """A multi-model variant's models directory, resolved: the container compares a load's
    ``url`` with its own models directory after resolving symlinks."""
    if path is None:
        return None
    if not path.is_dir():
        raise ConfigError(f"{where}: models directory {path} does not exist")
    return path.resolve()


def load(path: Path) -> tuple[EndpointConfig, ...]:
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(document) - {"endpoints"}
    if unknown or not isinstance(document.get("endpoints"), dict) or not document["endpoints"]:
        raise ConfigError(f"{path}: expected [endpoints.NAME.variants.VARIANT] tables only")
    return tuple(_endpoint(path, name, table) for name, table in document["endpoints"].items())


def _endpoint(path: Path, name: str, table: Any) -> EndpointConfig:
    where = f"{path}: endpoint {name!r}"
    check_name("endpoint", name)
    if not isinstance(table, dict) or set(table) != {"variants"} or not table["variants"]:
        raise ConfigError(f"{where}: expected its variants, as [endpoints.{name}.variants.NAME]")
    variants = tuple(
        _variant(path, f"{where}, variant {variant!r}", variant, values)
        for variant, values in table["variants"].items()
    )
    if not any(variant.weight > 0 for variant in variants):
        raise ConfigError(f"{where}: at least one variant needs a weight above 0")
    return EndpointConfig(name, variants)


def _variant(path: Path, where: str, name: str, values: Any) -> VariantConfig:
    check_name("variant", name)
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(values) - _VARIANT_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_VARIANT_KEYS)}"
        )
    if frozenset(values) & _SOURCES not in _SOURCE_SETS:
        raise ConfigError(
            f"{where}: give one of model_dir, models_dir and container_url (or container_url "
            "with models_dir, for a multi-model container already running)"
        )
    if "container_models_dir" in values and not {"container_url", "models_dir"} <= set(values):
        raise ConfigError(f"{where}: container_models_dir goes with container_url and models_dir")
    weight = values.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise ConfigError(f"{where}: weight must be a number")
    if not (weight >= 0 and math.isfinite(weight)):
        raise ConfigError(f"{where}: weight must be a number >= 0")
    environment = values.get("environment", {})
    if not isinstance(environment, dict) or not all(
        isinstance(value, str) for value in environment.values()
    ):
        raise ConfigError(f"{where}: environment must be a table of strings")
    model_dir = model_archive = None
    if "model_dir" in values:
        model_dir, model_archive = _model(where, path.parent / str(values["model_dir"]))
    container_url = None
    if "container_url" in values:
        try:
            container_url = _url(str(values["container_url"]))
        except ValueError as exc:
            raise ConfigError(f"{where}: container_url: {exc}") from None
    models_dir = None
    if "models_dir" in values:
        models_dir = _models_dir(where, path.parent / str(values["models_dir"]))
    container_models_dir = None
    if models_dir is not None:
        container_models_dir = str(values.get("container_models_dir", models_dir))
        if not container_models_dir.startswith("/"):
            raise ConfigError(f"{where}: container_models_dir must be an absolute path")
        container_models_dir = container_models_dir.rstrip("/") or "/"
    return VariantConfig(
        name,
        model_dir,
        container_url,
        float(weight),
        environment,
        models_dir,
        container_models_dir,
        model_archive,
    )
