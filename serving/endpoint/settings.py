"""Every setting of ``serving endpoint``, in one table that drives its flags, environment
variables, defaults, validation and the table in ``docs/endpoint.md``.

The same rules as the server's own table (:mod:`serving.settings`): defaults < environment <
flags, and a value that does not parse stops the command with the variable or flag named.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from .. import parsing as parse
from ..settings import Setting, SettingsError, _setting, parsed_values

#: The service's body limit today (the 2017 service model says 5 MiB): 6 MiB.
DEFAULT_MAX_PAYLOAD_MB = 6.0


def _url(text: str) -> str:
    value = text.strip().rstrip("/")
    if not value.startswith("http://") or len(value) <= len("http://"):
        raise ValueError("not an http:// URL such as http://127.0.0.1:8080")
    return value


def _optional_path(text: str) -> Path | None:
    return Path(text.strip()) if text.strip() else None


def _optional_url(text: str) -> str | None:
    return _url(text) if text.strip() else None


@dataclass(frozen=True)
class EndpointSettings:
    """``serving endpoint``'s configuration: built once at startup, frozen."""

    model_dir: Path | None = _setting(
        None,
        "SERVING_ENDPOINT_MODEL_DIR",
        "--model-dir",
        _optional_path,
        "Model directory, or a model.tar.gz (extracted into a temporary directory that is "
        "removed when the command stops): start `serving serve` for it on a free loopback "
        "port, as the endpoint's one production variant (AllTraffic).",
        default_text="none",
    )
    models_dir: Path | None = _setting(
        None,
        "SERVING_ENDPOINT_MODELS_DIR",
        "--models-dir",
        _optional_path,
        "Models directory of a multi-model endpoint: start `serving serve --multi-model` for "
        "it (or, with --container-url, front one that reads its models there); TargetModel "
        "names a model.tar.gz (any tar archive, extracted on first use into a directory of "
        "this command's inside it, removed when the command stops) or a model directory in "
        "it, loaded on first use.",
        default_text="none",
    )
    container_url: str | None = _setting(
        None,
        "SERVING_ENDPOINT_CONTAINER_URL",
        "--container-url",
        _optional_url,
        "Front a container that is already running (e.g. docker run -p 8080:8080 IMAGE "
        "serve) as the endpoint's one production variant, instead of starting one.",
        default_text="none",
    )
    config: Path | None = _setting(
        None,
        "SERVING_ENDPOINT_CONFIG",
        "--config",
        _optional_path,
        "TOML file of endpoints and their production variants (model directory, models "
        "directory or container URL, weight, environment); instead of NAME and --model-dir, "
        "--models-dir or --container-url.",
        default_text="none",
    )
    host: str = _setting(
        "127.0.0.1",
        "SERVING_ENDPOINT_HOST",
        "--host",
        parse.nonempty,
        "Address the API listens on.",
    )
    port: int = _setting(
        8090,
        "SERVING_ENDPOINT_PORT",
        "--port",
        parse.integer(0, 65535),
        "Port the API listens on (0: any free port, logged at startup).",
    )
    max_payload_mb: float = _setting(
        DEFAULT_MAX_PAYLOAD_MB,
        "SERVING_ENDPOINT_MAX_PAYLOAD_MB",
        "--max-payload-mb",
        parse.positive_number,
        "Largest request body in MiB; a larger one is a ValidationError, as the service "
        "answers (6 MiB today; 5 in the 2017 service model).",
        default_text="6",
    )
    timeout: float = _setting(
        60.0,
        "SERVING_ENDPOINT_TIMEOUT",
        "--timeout",
        parse.positive_number,
        "Seconds a container has to answer an invocation; past it, a ModelError with "
        "OriginalStatusCode 0, as the service answers.",
        default_text="60",
    )
    start_timeout: float = _setting(
        240.0,
        "SERVING_ENDPOINT_START_TIMEOUT",
        "--start-timeout",
        parse.positive_number,
        "Seconds a container it starts has to answer GET /ping with 200 (SageMaker's "
        "default health-check window is 4 minutes).",
        default_text="240",
    )
    verify_signature: bool = _setting(
        False,
        "SERVING_ENDPOINT_VERIFY_SIGNATURE",
        "--verify-signature",
        parse.boolean,
        "Refuse requests not signed (SigV4) with the access key and secret below, with the "
        "service's errors. Off by default: the API listens on loopback.",
        default_text="false",
        is_switch=True,
    )
    access_key_id: str | None = _setting(
        None,
        "AWS_ACCESS_KEY_ID",
        "--access-key-id",
        parse.optional,
        "Access key id that --verify-signature accepts (the environment variable boto3 "
        "signs with, so a client in the same shell is accepted).",
        default_text="none",
    )
    secret_access_key: str | None = _setting(
        None,
        "AWS_SECRET_ACCESS_KEY",
        "--secret-access-key",
        parse.optional,
        "Secret access key that --verify-signature checks signatures with.",
        default_text="none",
    )
    log_level: int = _setting(
        logging.INFO,
        "SERVING_ENDPOINT_LOG_LEVEL",
        "--log-level",
        parse.log_level,
        "Log level of the API (containers have their own), as a name or a number.",
        default_text="INFO",
    )

    @property
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * 1024 * 1024)

    @classmethod
    def from_sources(
        cls, environ: Mapping[str, str], flags: Mapping[str, str] | None = None
    ) -> EndpointSettings:
        """Settings from an environment and flag values (by setting name, as text)."""
        values = parsed_values(
            ENDPOINT_SETTINGS, environ, flags, secret=frozenset({"secret_access_key"})
        )
        settings = cls(**values)
        if settings.verify_signature and not (
            settings.access_key_id and settings.secret_access_key
        ):
            raise SettingsError(
                "--verify-signature needs an access key id and a secret access key "
                "(--access-key-id and --secret-access-key, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY)"
            )
        return settings


#: The settings table, in declaration order.
ENDPOINT_SETTINGS: tuple[Setting, ...] = tuple(
    Setting(name=f.name, **f.metadata["setting"]) for f in fields(EndpointSettings)
)


def markdown_table() -> str:
    """The table in docs/endpoint.md (a test keeps the document in step with this)."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    rows += [
        f"| `{s.flag}` | `{s.env}` | `{s.default_text}` | {s.help} |" for s in ENDPOINT_SETTINGS
    ]
    return "\n".join(rows)
