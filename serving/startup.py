"""What the master checks before it starts any worker, without importing Werkzeug or numpy."""

from __future__ import annotations

from handlers.registry import BUILTIN_HANDLERS, UnknownHandler, check_handler_name
from handlers.toolkit_setup import program_path

from .settings import Settings, SettingsError


def handler_name(settings: Settings) -> str:
    """The handler ``settings`` choose; ``auto`` is ``inference_py`` when user code exists."""
    if settings.handler != "auto":
        return settings.handler
    code_dir = settings.code_dir or settings.model_dir / "code"
    return "inference_py" if program_path(code_dir, settings.program).is_file() else "onnx"


def check_settings(settings: Settings) -> str:
    """The handler's name, or :class:`SettingsError` if it names no loadable handler."""
    name = handler_name(settings)
    try:
        check_handler_name(name)
    except UnknownHandler as exc:
        raise SettingsError(f"invalid SERVING_HANDLER={settings.handler!r}: {exc}") from None
    if settings.multi_model:  # no model of its own: each load names its directory
        if settings.models_dir is not None and not settings.models_dir.is_dir():
            raise SettingsError(
                f"models directory {settings.models_dir} does not exist "
                "(--models-dir, or SAGEMAKER_BASE_DIR with its models/ folder)"
            )
    elif name in BUILTIN_HANDLERS and not settings.model_dir.is_dir():
        raise SettingsError(
            f"model directory {settings.model_dir} does not exist "
            "(--model-dir, or SAGEMAKER_BASE_DIR with its model/ folder)"
        )
    return name
