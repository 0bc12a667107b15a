"""Endpoints and their production variants: from the command line (one endpoint, one
variant named ``AllTraffic``) or from a TOML file, checked whole before anything starts.

A TOML file names endpoints and, under each, its variants, as ``CreateEndpointConfig``'s
``ProductionVariants`` do::

    [endpoints.iris.variants.blue]
    model_dir = "examples/iris/model"      # started with `serving serve`, relative to this file
    weight = 3                             # InitialVariantWeight (default 1)
    environment = { SAGEMAKER_MODEL_SERVER_WORKERS = "1" }

    [endpoints.iris.variants.green]
    container_url = "http://127.0.0.1:8080"   # a container already running
    weight = 1
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
from .settings import EndpointSettings, _url

DEFAULT_VARIANT = "AllTraffic"

_VARIANT_KEYS = {"model_dir", "container_url", "weight", "environment"}


class ConfigError(SettingsError):
    """The endpoints' configuration is invalid; the message says where and why."""


@dataclass(frozen=True)
class VariantConfig:
    name: str
    #: A model directory to start ``serving serve`` for, or ``None`` with ``container_url``.
    model_dir: Path | None
    container_url: str | None
    weight: float = 1.0
    #: Added to the started container's environment (a SageMaker Model's ``Environment``).
    environment: Mapping[str, str] = field(default_factory=dict)


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
        if name is not None or settings.model_dir or settings.container_url:
            raise ConfigError(
                "--config describes the endpoints: give it without NAME, --model-dir or "
                "--container-url"
            )
        return load(settings.config)
    if name is None:
        raise ConfigError(
            "give an endpoint NAME (with --model-dir or --container-url), or --config"
        )
    check_name("endpoint", name)
    if (settings.model_dir is None) == (settings.container_url is None):
        raise ConfigError("give one of --model-dir and --container-url")
    if settings.model_dir is not None and not settings.model_dir.is_dir():
        raise ConfigError(f"model directory {settings.model_dir} does not exist")
    variant = VariantConfig(DEFAULT_VARIANT, settings.model_dir, settings.container_url)
    return (EndpointConfig(name, (variant,)),)


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
    if "models_dir" in values:
        raise ConfigError(
            f"{where}: multi-model variants (models_dir) are not supported yet; see "
            "docs/endpoint.md"
        )
    unknown = set(values) - _VARIANT_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_VARIANT_KEYS)}"
        )
    if ("model_dir" in values) == ("container_url" in values):
        raise ConfigError(f"{where}: give one of model_dir and container_url")
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
    model_dir = None
    if "model_dir" in values:
        model_dir = path.parent / str(values["model_dir"])
        if not model_dir.is_dir():
            raise ConfigError(f"{where}: model directory {model_dir} does not exist")
    container_url = None
    if "container_url" in values:
        try:
            container_url = _url(str(values["container_url"]))
        except ValueError as exc:
            raise ConfigError(f"{where}: container_url: {exc}") from None
    return VariantConfig(name, model_dir, container_url, float(weight), environment)
