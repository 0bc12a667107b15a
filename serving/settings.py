"""Every setting of the server, in one table that drives flags, environment, defaults,
validation and the README's configuration table.

Precedence, lowest first: the default, the environment variable, the command-line flag.
A value that does not parse stops the server at startup with the variable (or flag) and the
value named; nothing falls back silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from . import parsing as parse
from .cpus import available_cpus, gpu_runtime_installed, visible_gpus
from .flask_integration import app_name

DEFAULT_MODEL_DIR = Path("/opt/ml/model")
#: Providers that run on NVIDIA GPUs (workers default to one per GPU when one is asked for).
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")

#: Batch transform's limits: bodies up to 100 MB, invocations up to an hour.
BATCH_MAX_PAYLOAD_MB = 100.0
BATCH_TIMEOUT = 3600


class SettingsError(ValueError):
    """A setting's value is invalid; the message names the variable or flag and the value."""


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, tuple | list):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _show_level(level: int) -> str:
    name = logging.getLevelName(level)
    return name if isinstance(name, str) and not name.startswith("Level ") else str(level)


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str
    env: str
    flag: str
    parse: Callable[[str], Any]
    help: str
    #: How the default reads in docs (defaults computed at startup describe themselves).
    default_text: str
    #: Applied to the environment variable's text before parsing (e.g. base dir -> model dir).
    from_env: Callable[[str], str] = str
    #: A flag without a value (``--log-pings``) instead of ``--flag VALUE``.
    is_switch: bool = False
    #: The value as a user would write it, for the startup log (``auto``, not ``('auto',)``).
    show: Callable[[Any], str] = _show

    @property
    def metavar(self) -> str:
        """What ``--help`` names the flag's value: the setting's name (``--port PORT``)."""
        return self.name.upper()


def _setting(
    default: Any,
    env: str,
    flag: str,
    parse: Callable[[str], Any],
    help: str,
    *,
    default_text: str | None = None,
    from_env: Callable[[str], str] = str,
    is_switch: bool = False,
    show: Callable[[Any], str] = _show,
) -> Any:
    meta = {
        "setting": {
            "env": env,
            "flag": flag,
            "parse": parse,
            "help": help,
            "default_text": default_text if default_text is not None else str(default),
            "from_env": from_env,
            "is_switch": is_switch,
            "show": show,
        }
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """The server's configuration: built once at startup, frozen, passed to everything."""

    handler: str = _setting(
        "auto",
        "SERVING_HANDLER",
        "--handler",
        parse.nonempty,
        "Handler: auto (inference_py when the code directory holds the program, else onnx), "
        "a built-in or entry-point name, or package.module:Class.",
    )
    flask_app: str | None = _setting(
        None,
        "SERVING_FLASK_APP",
        "--flask-app",
        app_name,
        "Your Flask app, as package.module:app (installed, or on PYTHONPATH): each worker "
        "imports it and serves its routes, while /ping, /invocations and "
        "/execution-parameters stay the server's own (pip install the flask extra).",
        default_text="none",
    )
    model_dir: Path = _setting(
        DEFAULT_MODEL_DIR,
        "SAGEMAKER_BASE_DIR",
        "--model-dir",
        Path,
        "Model directory. The environment variable names the base directory "
        "(the model directory is its model/ folder), the flag the model directory itself.",
        default_text="/opt/ml/model (SAGEMAKER_BASE_DIR=/opt/ml)",
        from_env=lambda base: base.rstrip("/") + "/model",
    )
    model_file: str | None = _setting(
        None,
        "SERVING_MODEL_FILE",
        "--model-file",
        parse.optional,
        "Model file inside the model directory; by default the only *.onnx file there.",
        default_text="the only *.onnx",
    )
    providers: tuple[str, ...] = _setting(
        ("auto",),
        "SERVING_PROVIDERS",
        "--providers",
        parse.providers,
        "onnxruntime execution providers, comma-separated, in order of preference; auto "
        "is CUDA when the installed onnxruntime has it, then the CPU.",
        default_text="auto",
    )
    codec_plugins: tuple[str, ...] | None = _setting(
        None,
        "SERVING_CODEC_PLUGINS",
        "--codec-plugins",
        parse.plugin_names,
        "Codec plugins to load: all installed ones, none, or entry-point names, comma-separated.",
        default_text="all",
        show=lambda names: "all" if names is None else _show(names),
    )
    allow_cpu_fallback: bool = _setting(
        False,
        "SERVING_ALLOW_CPU_FALLBACK",
        "--allow-cpu-fallback",
        parse.boolean,
        "Run on the CPU when a GPU provider cannot start, instead of stopping.",
        default_text="false",
        is_switch=True,
    )
    onnxruntime_telemetry: bool = _setting(
        False,
        "SERVING_ONNXRUNTIME_TELEMETRY",
        "--onnxruntime-telemetry",
        parse.boolean,
        "Let onnxruntime keep its device id under $HOME/.cache and send its telemetry; off, "
        "workers start it with ORT_DISABLE_TELEMETRY=1.",
        default_text="false",
        is_switch=True,
    )
    code_dir: Path | None = _setting(
        None,
        "SAGEMAKER_SUBMIT_DIRECTORY",
        "--code-dir",
        parse.code_dir,
        "Folder of user code (inference.py). An s3:// URL, which the SageMaker SDK may set, "
        "means the default: the SDK also repacks the code into the model's code/ folder.",
        default_text="<model dir>/code",
    )
    program: str = _setting(
        "inference.py",
        "SAGEMAKER_PROGRAM",
        "--program",
        parse.nonempty,
        "User module in the code directory (with or without .py), with model_fn/input_fn/"
        "predict_fn/output_fn.",
    )
    install_requirements: bool = _setting(
        True,
        "SERVING_INSTALL_REQUIREMENTS",
        "--install-requirements",
        parse.boolean,
        "Install the code directory's requirements.txt with pip at startup, once, before the "
        "workers start (into a folder under TMPDIR, put on sys.path); a failure stops the "
        "server. false for images that install their dependencies when they are built.",
        default_text="true",
        is_switch=True,
    )
    multi_model: bool = _setting(
        False,
        "SAGEMAKER_MULTI_MODEL",
        "--multi-model",
        parse.boolean,
        "Multi-model endpoint: start with no model and serve SageMaker's load, list, "
        "describe, unload and invoke calls under /models; every worker serves every loaded "
        "model.",
        default_text="false",
        is_switch=True,
    )
    models_dir: Path | None = _setting(
        None,
        "SERVING_MODELS_DIR",
        "--models-dir",
        Path,
        "Multi-model endpoint: the folder a load's url must lie in, symlinks resolved.",
        default_text="$SAGEMAKER_BASE_DIR/models (/opt/ml/models)",
    )
    mme_memory_mb: float = _setting(
        0.0,
        "SERVING_MME_MEMORY_MB",
        "--mme-memory-mb",
        parse.non_negative_number,
        "Multi-model endpoint: MiB the loaded models may take, every worker's copy counted "
        "(a model's footprint is the resident memory its load added to a worker); a load "
        "past it gets a 507. 0 means the container's memory limit (cgroup, else the "
        "machine's) less the server's own memory without models, the workers' request-body "
        "memory and a twentieth of the limit.",
        default_text="0 (memory limit less headroom)",
    )
    mme_evict: str = _setting(
        "none",
        "SERVING_MME_EVICT",
        "--mme-evict",
        parse.one_of("none", "lru"),
        "Multi-model endpoint: a load that does not fit gets a 507 (none; SageMaker then "
        "unloads models and retries), or unloads the least recently invoked models until "
        "it fits (lru, for running outside SageMaker).",
    )
    mme_load_timeout: float = _setting(
        360.0,
        "SERVING_MME_LOAD_TIMEOUT",
        "--mme-load-timeout",
        parse.positive_number,
        "Multi-model endpoint: seconds a load may take, every worker's load and the wait for "
        "them included (SageMaker gives a load 360 s); past it the load gets a 504 and leaves "
        "nothing loaded. Also the bound on an unload's wait for the workers.",
        default_text="360",
    )
    host: str = _setting(
        "0.0.0.0",  # noqa: S104 - a container must listen on every interface
        "SERVING_HOST",
        "--host",
        parse.nonempty,
        "Address to listen on.",
    )
    port: int = _setting(
        8080,
        "SAGEMAKER_BIND_TO_PORT",
        "--port",
        parse.integer(1, 65535),
        "Port to listen on (SageMaker sets it for inference pipelines).",
    )
    workers: int = _setting(
        0,
        "SAGEMAKER_MODEL_SERVER_WORKERS",
        "--workers",
        parse.integer(0),
        "Worker processes, each with its own copy of the model; 0 means one per visible GPU "
        "when onnxruntime can use them (CUDA_VISIBLE_DEVICES, else /dev/nvidiaN), else one per "
        "CPU this process may use (cgroup quota and affinity).",
        default_text="0 (GPUs, else CPUs)",
    )
    inference_threads: int = _setting(
        0,
        "SERVING_INFERENCE_THREADS",
        "--inference-threads",
        parse.integer(0),
        "Threads one inference may use (onnxruntime intra-op threads); 0 means CPUs "
        "available divided by workers, at least 1.",
        default_text="0 (CPUs / workers)",
    )
    inference_concurrency: int = _setting(
        1,
        "SERVING_INFERENCE_CONCURRENCY",
        "--inference-concurrency",
        parse.integer(1),
        "Model runs in flight at once per worker, each in its own native thread off the "
        "event loop.",
    )
    max_batch_size: int = _setting(
        32,
        "SERVING_MAX_BATCH_SIZE",
        "--max-batch-size",
        parse.integer(1),
        "Rows one model run may gather from concurrent requests (models with a free first "
        "dimension); 1 turns batching off.",
    )
    max_batch_delay_ms: float = _setting(
        0.0,
        "SERVING_MAX_BATCH_DELAY_MS",
        "--max-batch-delay-ms",
        parse.non_negative_number,
        "Milliseconds a partial batch waits for more requests; 0 batches only what queued "
        "while the previous run was busy.",
        default_text="0",
    )
    max_active_requests: int = _setting(
        0,
        "SERVING_MAX_ACTIVE_REQUESTS",
        "--max-active-requests",
        parse.integer(0),
        "Requests a worker decodes and runs at once; the others wait, their bodies received, "
        "so that /ping is answered at once even under load. 0 means max batch size + "
        "concurrency.",
        default_text="0 (batch + concurrency)",
    )
    max_active_mb: float = _setting(
        5.0,
        "SERVING_MAX_ACTIVE_MB",
        "--max-active-mb",
        parse.positive_number,
        "MiB of request bodies a worker decodes and runs at once (a larger body goes in "
        "alone); with the request limit, this keeps /ping fast under large bodies.",
        default_text="5",
    )
    max_decoded_mb: float = _setting(
        0.0,
        "SERVING_MAX_DECODED_MB",
        "--max-decoded-mb",
        parse.non_negative_number,
        "MiB the arrays decoded from one request body may take (a compressed .npz inflated, "
        "RecordIO's sparse tensors made dense); past it, a 413. 0 means 16 times the body "
        "limit (96 MiB for 6 MiB), or 1024 MiB without one.",
        default_text="0 (16 x body limit)",
    )
    max_rows: int = _setting(
        0,
        "SERVING_MAX_ROWS",
        "--max-rows",
        parse.integer(0),
        "Rows (length of the first dimension) one request's decoded inputs may have; past "
        "it, a 413 (multi-record CSV and JSON Lines bodies, read in chunks, are answered in "
        "parts instead). 0 means one row per 16 bytes of the body limit (393,216 for 6 MiB), "
        "or 67,108,864 without one.",
        default_text="0 (body limit / 16 B)",
    )
    timeout: int = _setting(
        60,
        "SAGEMAKER_MODEL_SERVER_TIMEOUT",
        "--timeout",
        parse.integer(1),
        "Seconds a request may take once its head has arrived (its body, waiting for "
        "admission, every inference.py hook and the model run together) before a 504; also "
        "how long a worker's event loop may stay blocked before gunicorn restarts it.",
    )
    timeout_seconds: int | None = _setting(
        None,
        "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS",
        "--timeout-seconds",
        parse.integer(1),
        "The request timeout in seconds, as the AWS toolkit reads this variable: when set, it "
        "wins over SAGEMAKER_MODEL_SERVER_TIMEOUT (but not over --timeout).",
        default_text="unset",
        show=lambda seconds: "unset" if seconds is None else str(seconds),
    )
    graceful_timeout: int = _setting(
        25,
        "SERVING_GRACEFUL_TIMEOUT",
        "--graceful-timeout",
        parse.integer(0),
        "Seconds in-flight requests get to finish after SIGTERM (SageMaker kills at 30).",
    )
    keepalive: int = _setting(
        60,
        "SERVING_KEEPALIVE",
        "--keepalive",
        parse.integer(0),
        "Seconds an idle keep-alive connection is kept open.",
    )
    body_timeout: float = _setting(
        10.0,
        "SERVING_BODY_TIMEOUT",
        "--body-timeout",
        parse.positive_number,
        "Seconds a request body may make no progress (no byte arrives) before the request "
        "gets a 408 and its connection is closed.",
        default_text="10",
    )
    max_buffered_mb: float = _setting(
        64.0,
        "SERVING_MAX_BUFFERED_MB",
        "--max-buffered-mb",
        parse.positive_number,
        "MiB of request bodies a worker holds in memory at once, received or still "
        "arriving; past it, bodies wait unread (one at a time may go past it, so that "
        "reading never stops for good).",
        default_text="64",
    )
    default_accept: str = _setting(
        "application/json",
        "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT",
        "--default-accept",
        parse.media_type,
        "Response type when a request has no Accept or accepts anything (*/*).",
    )
    max_payload_mb: float = _setting(
        6.0,
        "SAGEMAKER_MAX_PAYLOAD_IN_MB",
        "--max-payload-mb",
        parse.non_negative_number,
        "Largest request body in MiB; larger ones get 413 (batch transform sends up to 100). "
        "0, as batch transform sets for chunked bodies, means no limit.",
        default_text="6",
    )
    batch: bool = _setting(
        False,
        "SAGEMAKER_BATCH",
        "--batch",
        parse.boolean,
        "Batch transform: defaults become a 100 MiB body limit and a 3600 s timeout.",
        default_text="false",
        is_switch=True,
    )
    batch_strategy: str = _setting(
        "MULTI_RECORD",
        "SAGEMAKER_BATCH_STRATEGY",
        "--batch-strategy",
        parse.one_of("MULTI_RECORD", "SINGLE_RECORD"),
        "BatchStrategy that GET /execution-parameters suggests: MULTI_RECORD or SINGLE_RECORD.",
    )
    max_concurrent_transforms: int = _setting(
        0,
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS",
        "--max-concurrent-transforms",
        parse.integer(0),
        "MaxConcurrentTransforms that GET /execution-parameters suggests; 0 means workers x "
        "inference concurrency.",
        default_text="0 (workers x concurrency)",
    )
    record_chunk_mb: float = _setting(
        0.25,
        "SERVING_RECORD_CHUNK_MB",
        "--record-chunk-mb",
        parse.positive_number,
        "MiB of whole lines a multi-record CSV or JSON Lines body is read, decoded and run "
        "in at a time (batch transform's MultiRecord), so memory follows the chunk, not "
        "the body.",
        default_text="0.25",
    )
    record_spool_mb: float = _setting(
        8.0,
        "SERVING_RECORD_SPOOL_MB",
        "--record-spool-mb",
        parse.positive_number,
        "MiB of a multi-record body's response kept in memory; the rest waits in a "
        "temporary file (TMPDIR, else /tmp) until the last chunk is answered.",
        default_text="8",
    )
    bad_records: str = _setting(
        "reject",
        "SERVING_BAD_RECORDS",
        "--bad-records",
        parse.one_of("reject", "placeholder"),
        "A bad record among many CSV or JSON Lines records: reject fails the request with a "
        "400 naming its line; placeholder answers it with an empty CSV line or a JSON Lines "
        '{"error": ...} line, so the other lines keep their places.',
    )
    log_level: int = _setting(
        logging.INFO,
        "SAGEMAKER_CONTAINER_LOG_LEVEL",
        "--log-level",
        parse.log_level,
        "Log level, as a name (INFO) or a number (20).",
        default_text="INFO",
        show=_show_level,
    )
    log_pings: bool = _setting(
        False,
        "SERVING_LOG_PINGS",
        "--log-pings",
        parse.boolean,
        "Access-log GET /ping too (off: SageMaker pings every few seconds).",
        default_text="false",
        is_switch=True,
    )
    worker_connections: int = _setting(
        1000,
        "SERVING_WORKER_CONNECTIONS",
        "--worker-connections",
        parse.integer(1),
        "Connections one worker keeps open at once. At the limit it closes the keep-alive "
        "connections idle the longest, so that a new connection (and /ping) gets through; "
        "past it, with none idle, new connections wait to be accepted.",
    )

    def execution_parameters(self) -> dict[str, int | str]:
        """What ``GET /execution-parameters`` answers: how batch transform should call us."""
        return {
            "MaxConcurrentTransforms": self.max_concurrent_transforms
            or self.workers * self.inference_concurrency,
            "BatchStrategy": self.batch_strategy,
            # 0 is the platform's "no limit, chunked bodies"; else whole MB, 1 to 100
            "MaxPayloadInMB": 0
            if self.max_payload_bytes is None
            else min(max(int(self.max_payload_mb), 1), int(BATCH_MAX_PAYLOAD_MB)),
        }

    @property
    def max_payload_bytes(self) -> int | None:
        """The body limit in bytes; ``None`` when there is none."""
        return int(self.max_payload_mb * 1024 * 1024) or None

    @classmethod
    def from_sources(
        cls,
        environ: Mapping[str, str],
        flags: Mapping[str, str] | None = None,
        cpus: int | None = None,
        gpus: int | None = None,
    ) -> Settings:
        """Build settings from an environment and flag values (by setting name, as text).

        ``cpus`` and ``gpus`` are the numbers of CPUs and visible GPUs the automatic defaults
        are sized to (measured when ``None``).
        """
        values = parsed_values(SETTINGS, environ, flags)
        if values.get("timeout_seconds") and not (flags and flags.get("timeout") is not None):
            values["timeout"] = values["timeout_seconds"]  # the toolkit's precedence
        if values.get("batch"):  # what batch transform jobs need, unless set otherwise
            values.setdefault("max_payload_mb", BATCH_MAX_PAYLOAD_MB)
            values.setdefault("timeout", BATCH_TIMEOUT)
        settings = cls(**values)
        visible = visible_gpus(environ) if gpus is None else gpus
        cpus = available_cpus() if cpus is None else cpus
        return settings.resolved(cpus, settings.gpus_to_serve_on(visible))

    def gpus_to_serve_on(self, visible: int) -> int:
        """The GPUs workers are counted by: the ``visible`` ones when the providers may use
        them (a GPU provider named, or ``auto`` with onnxruntime-gpu installed), else 0."""
        named = any(p in GPU_PROVIDERS for p in self.providers)
        if "auto" in self.providers:
            named = named or gpu_runtime_installed()
        return visible if named else 0

    def resolved(self, cpus: int, gpus: int = 0) -> Settings:
        """These settings with the automatic values filled in: worker and thread counts sized
        to ``cpus`` (workers: one per GPU when ``gpus``, as the AWS toolkit's model server
        starts them), the code directory under the model directory."""
        workers = self.workers or gpus or cpus
        return replace(
            self,
            workers=workers,
            max_active_requests=self.max_active_requests
            or self.max_batch_size + self.inference_concurrency,
            inference_threads=self.inference_threads or max(1, cpus // workers),
            code_dir=self.code_dir or self.model_dir / "code",
            models_dir=self.models_dir or self.model_dir.parent / "models",
        )

    def describe(self) -> str:
        """One line listing every effective value, as a user would write it, for the startup
        log: ``providers=auto codec_plugins=all log_level=INFO``."""
        return " ".join(f"{s.name}={s.show(getattr(self, s.name))}" for s in SETTINGS)


def parsed_values(
    table: tuple[Setting, ...],
    environ: Mapping[str, str],
    flags: Mapping[str, str] | None,
    secret: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The values ``table``'s settings take from ``environ`` and ``flags`` (flags win), by
    name; :class:`SettingsError` naming the variable or flag, and the value unless the
    setting is ``secret``, for one that does not parse."""
    values: dict[str, Any] = {}
    for setting in table:
        if flags and flags.get(setting.name) is not None:
            text = flags[setting.name]
            shown, where = text, setting.flag
        elif setting.env in environ:
            text = setting.from_env(environ[setting.env])
            shown, where = environ[setting.env], setting.env
        else:
            continue
        if setting.name in secret:
            shown = "***"
        source = f"{where} {shown!r}" if where == setting.flag else f"{where}={shown!r}"
        try:
            values[setting.name] = setting.parse(text)
        except ValueError as exc:
            raise SettingsError(f"invalid {source}: {exc}") from None
    return values


def _table() -> tuple[Setting, ...]:
    return tuple(Setting(name=f.name, **f.metadata["setting"]) for f in fields(Settings))


#: The settings table, in declaration order.
SETTINGS: tuple[Setting, ...] = _table()


def markdown_table() -> str:
    """The README's configuration table (a test keeps the README in step with this)."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{s.flag}` | `{s.env}` | `{s.default_text}` | {s.help} |" for s in SETTINGS]
    return "\n".join(rows)
