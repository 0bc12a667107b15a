"""What the master checks before it starts any worker, without importing Werkzeug or numpy."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from handlers.registry import BUILTIN_HANDLERS, UnknownHandler, check_handler_name
from handlers.toolkit_setup import program_path

from .settings import Settings, SettingsError

#: The media types the built-in codecs write (``handlers.codecs.default_codecs().encodable``,
#: which a test keeps in step): the master knows them without importing numpy.
BUILTIN_RESPONSE_TYPES = frozenset(
    {
        "application/json",
        "application/jsonlines",
        "text/csv",
        "application/x-npy",
        "application/x-npz",
        "application/x-recordio-protobuf",
    }
)


class CannotListen(Exception):
    """The address and port cannot be listened on (most often: another process has it)."""


def handler_name(settings: Settings) -> str:
    """The handler ``settings`` choose; ``auto`` is ``inference_py`` when user code exists."""
    if settings.handler != "auto":
        return settings.handler
    code_dir = settings.code_dir or settings.model_dir / "code"
    return "inference_py" if program_path(code_dir, settings.program).is_file() else "onnx"


def _check_folder(path: Path, what: str, where: str) -> None:
    if path.is_dir():
        return
    state = "is a file, not a folder" if path.exists() else "does not exist"
    raise SettingsError(f"{what} {path} {state} ({where})")


def check_settings(settings: Settings) -> str:
    """The handler's name, or :class:`SettingsError` if it names no loadable handler, a
    model folder that is not one, or a default response type no codec writes."""
    name = handler_name(settings)
    try:
        check_handler_name(name)
    except UnknownHandler as exc:
        raise SettingsError(f"invalid SERVING_HANDLER={settings.handler!r}: {exc}") from None
    if settings.multi_model:  # no model of its own: each load names its directory
        if settings.models_dir is not None:
            where = "--models-dir, or SAGEMAKER_BASE_DIR with its models/ folder"
            _check_folder(settings.models_dir, "models directory", where)
        return name
    if name in BUILTIN_HANDLERS:
        where = "--model-dir, or SAGEMAKER_BASE_DIR with its model/ folder"
        _check_folder(settings.model_dir, "model directory", where)
    if name == "onnx":
        _check_default_accept(settings)
    return name


def _check_default_accept(settings: Settings) -> None:
    """The ONNX handler answers in what its codecs write: a default no codec writes is a
    setting's mistake, said now rather than by every worker after its model loaded. Only a
    type the built-in codecs do not write loads the codec plugins here (and numpy with them)."""
    accept = settings.default_accept
    if accept in BUILTIN_RESPONSE_TYPES:
        return
    from handlers.codecs import CodecPluginError, installed_codecs

    try:
        writable = installed_codecs(names=settings.codec_plugins).encodable
    except CodecPluginError as exc:
        raise SettingsError(f"invalid SERVING_CODEC_PLUGINS: {exc}") from None
    if accept not in writable:
        raise SettingsError(
            f"invalid SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT={accept!r} (or --default-accept): "
            f"no codec writes it; they write {', '.join(writable)}"
        )


def check_port(settings: Settings) -> None:
    """Bind the address as gunicorn will, and let it go: :class:`CannotListen` with one line
    of reason, instead of gunicorn's five seconds of retries and ERROR lines."""
    where = f"{settings.host}:{settings.port}"
    try:
        family = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn
            probe.bind((settings.host, settings.port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CannotListen(
                f"port {settings.port} is in use ({where}): another process listens on it; "
                "stop it or choose another port (--port, or SAGEMAKER_BIND_TO_PORT)"
            ) from None
        raise CannotListen(f"cannot listen on {where}: {exc.strerror or exc}") from None
