"""An AWS-toolkit-style ``inference.py``, served behind the handler contract.

The user module (``SAGEMAKER_PROGRAM``, default ``inference.py``, in ``SAGEMAKER_SUBMIT_DIRECTORY``,
default ``<model dir>/code``) may define any of these; each one missing falls back to the
framework's ONNX behaviour:

=============================================  ===============================================
hook                                           when missing
=============================================  ===============================================
``model_fn(model_dir)``                        the model directory's ONNX file is loaded; the
                                               model the other hooks get is its
                                               ``onnxruntime.InferenceSession``
``input_fn(input_data, content_type)``         the codec of the Content-Type decodes the body
``predict_fn(data, model)``                    the ONNX model runs with the usual input checks
                                               (or ``model(data)`` for a callable from
                                               ``model_fn``)
``output_fn(prediction, accept)``              the codec of the Accept type encodes the
                                               prediction (an array, or arrays by name)
``transform_fn(model, input_data,              replaces the three above; defining it with any
content_type, accept)``                        of them is refused at load
=============================================  ===============================================

Every hook may declare one more, trailing ``context`` argument: a :class:`ToolkitContext`.
``input_data`` is the body as bytes; ``content_type`` and ``accept`` are bare media types.
``output_fn`` and ``transform_fn`` return bytes (or str), or ``(bytes, content_type)``.
Hooks run off the worker's event loop, a request's consecutive hooks in one call (one thread,
in order, as the AWS toolkit runs them), within the request's one timeout.
A hook that raises gives a 500 with its message, or the status of the exception's
``status_code`` attribute when it has one (as the AWS toolkit's errors do); the traceback
goes to the log only.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
import traceback
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np

from .base import CUSTOM_ATTRIBUTES, Encoded, Handler, InvocationContext
from .errors import ModelFailed, ModelLoadError, ServingError
from .execution import Executor
from .onnx_handler import OnnxHandler
from .tensors import Inputs, Outputs, as_numeric_array

log = logging.getLogger(__name__)

#: Each hook and the number of arguments it takes before the optional ``context``.
HOOK_ARITY = {"model_fn": 1, "input_fn": 2, "predict_fn": 2, "output_fn": 2, "transform_fn": 4}


class ToolkitContext:
    """The ``context`` argument: the parts of the AWS toolkit's context user code relies on.

    ``system_properties["model_dir"]`` is the model directory. ``get_request_header(0, name)``
    reads the request's Content-Type, Accept and custom attributes;
    ``set_response_header(0, "X-Amzn-SageMaker-Custom-Attributes", value)`` (or assigning
    :attr:`custom_attributes`) sets the response's custom attributes. ``model_fn`` gets a
    context without a request.
    """

    def __init__(self, model_dir: Path, invocation: InvocationContext | None = None) -> None:
        self.system_properties: dict[str, Any] = {"model_dir": str(model_dir), "gpu_id": None}
        self.invocation = invocation

    @property
    def custom_attributes(self) -> str | None:
        return self.invocation.custom_attributes if self.invocation else None

    @custom_attributes.setter
    def custom_attributes(self, value: str | None) -> None:
        if self.invocation is None:
            raise RuntimeError("there is no request to set custom attributes on")
        self.invocation.custom_attributes = value

    def get_all_request_header(self, idx: int = 0) -> dict[str, str]:
        if self.invocation is None:
            return {}
        headers = {"Content-Type": self.invocation.content_type, "Accept": self.invocation.accept}
        if self.invocation.custom_attributes is not None:
            headers[CUSTOM_ATTRIBUTES] = self.invocation.custom_attributes
        return headers

    def get_request_header(self, idx: int, key: str) -> str | None:
        wanted = key.lower()
        for name, value in self.get_all_request_header(idx).items():
            if name.lower() == wanted:
                return value
        return None

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        if key.lower() == CUSTOM_ATTRIBUTES.lower():
            self.custom_attributes = value
        else:  # the response's other headers are the server's: Content-Type comes from output_fn
            log.debug("ignoring response header %s set by user code", key)


@dataclass(frozen=True)
class Hook:
    """One user function, called with ``context`` appended when it declares it."""

    name: str
    function: Callable[..., Any]
    takes_context: bool

    @classmethod
    def find(cls, module: ModuleType, name: str) -> Hook | None:
        function = getattr(module, name, None)
        if function is None:
            return None
        if not callable(function):
            raise ModelLoadError(f"{name} in {module.__file__} is not a function")
        return cls(name, function, _takes_context(function, HOOK_ARITY[name]))

    def __call__(self, context: ToolkitContext, *arguments: Any) -> Any:
        if self.takes_context:
            arguments = (*arguments, context)
        try:
            return self.function(*arguments)
        except ServingError:
            raise
        except Exception as exc:  # user code: any exception is the hook's failure
            raise _hook_error(self.name, exc) from exc


def _takes_context(function: Callable[..., Any], arity: int) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # some callables have no signature: call them plainly
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) > arity or any(p.kind is p.VAR_POSITIONAL for p in parameters)


def _hook_error(hook: str, exc: Exception) -> ServingError:
    status = HTTPStatus.INTERNAL_SERVER_ERROR
    code = getattr(exc, "status_code", None)
    if isinstance(code, int) and 400 <= code <= 599:
        try:
            status = HTTPStatus(code)
        except ValueError:  # a code http.HTTPStatus does not name
            status = HTTPStatus.INTERNAL_SERVER_ERROR
    message = getattr(exc, "message", None)
    if not isinstance(message, str):
        message = str(exc)
    return ServingError(f"{hook} raised {type(exc).__name__}: {message}", status=status)


def import_user_module(code_dir: Path, program: str) -> ModuleType:
    """Import ``program`` from ``code_dir`` (which goes on ``sys.path`` for its helpers)."""
    path = code_dir / (program if program.endswith(".py") else f"{program}.py")
    if not path.is_file():
        raise ModelLoadError(f"user module {path} does not exist")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"{path} cannot be imported as a module")
    sys.path.insert(0, str(code_dir))
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # user code: report where it failed, then stop the worker
        raise ModelLoadError(
            f"{path} failed to import ({_where(exc, code_dir)}): {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _where(exc: Exception, code_dir: Path) -> str:
    """``file line N`` of the user's code where ``exc`` was raised (or the last frame)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{Path(exc.filename).name} line {exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    user_frames = [f for f in frames if Path(f.filename).is_relative_to(code_dir)]
    frame = (user_frames or frames)[-1]
    return f"{Path(frame.filename).name} line {frame.lineno}"


class InferencePyHandler(Handler):
    """Serves a model through the user's ``inference.py`` hooks (see the module docstring)."""

    model: Any
    _hooks: dict[str, Hook]
    _onnx: OnnxHandler | None

    def load(self) -> None:
        code_dir = self.config.code_dir or self.config.model_dir / "code"
        module = import_user_module(code_dir, self.config.program)
        self._hooks = {
            name: hook for name in HOOK_ARITY if (hook := Hook.find(module, name)) is not None
        }
        staged = sorted({"input_fn", "predict_fn", "output_fn"} & set(self._hooks))
        if "transform_fn" in self._hooks and staged:
            raise ModelLoadError(
                f"{module.__file__} defines transform_fn and {', '.join(staged)}; "
                "define transform_fn alone, or the others without it"
            )
        log.info("user module %s: %s", module.__file__, ", ".join(self._hooks) or "no hooks")
        model_fn = self._hooks.get("model_fn")
        self._onnx = None
        if model_fn is None:
            self._onnx = OnnxHandler(self.config)
            self._onnx.load()
            self.model = self._onnx.session
            return
        try:
            self.model = model_fn(ToolkitContext(self.config.model_dir), str(self.config.model_dir))
        except ServingError as exc:
            raise ModelLoadError(exc.message) from exc

    def _defines(self, *names: str) -> bool:
        return any(name in self._hooks for name in names)

    def content_types(self) -> Collection[str] | None:
        return None if self._defines("input_fn", "transform_fn") else super().content_types()

    def accept_types(self) -> Sequence[str] | None:
        if self._defines("output_fn", "transform_fn"):
            return None
        if self._onnx is not None and not self._defines("predict_fn"):
            return self._onnx.accept_types()  # its outputs are the ONNX model's
        return super().accept_types()

    def invoke(self, body: bytes, context: InvocationContext) -> Encoded:
        hook_context = ToolkitContext(self.config.model_dir, context)
        hooks = self._hooks

        def transform(data: bytes) -> Encoded:
            result = hooks["transform_fn"](
                hook_context, self.model, data, context.content_type, context.accept
            )
            return _reply("transform_fn", result, context.accept)

        def decode(data: Any) -> Any:
            if "input_fn" in hooks:
                return hooks["input_fn"](hook_context, data, context.content_type)
            return self.decode(data, context.content_type)

        def predict(data: Any) -> Any:
            if "predict_fn" in hooks:
                return hooks["predict_fn"](hook_context, data, self.model)
            return self.predict(data, context)

        def encode(prediction: Any) -> Encoded:
            if "output_fn" in hooks:
                result = hooks["output_fn"](hook_context, prediction, context.accept)
                return _reply("output_fn", result, context.accept)
            return self.encode(_as_outputs(prediction), context.accept)

        if "transform_fn" in hooks:
            return cast(Encoded, _run_stages(self.config.executor, [(transform, True)], body))
        stages = [
            (decode, "input_fn" in hooks),
            (predict, "predict_fn" in hooks),
            (encode, "output_fn" in hooks),
        ]
        return cast(Encoded, _run_stages(self.config.executor, stages, body))

    def predict(self, inputs: Any, context: InvocationContext) -> Outputs:
        """What runs without a ``predict_fn``: the ONNX model, or a callable ``model_fn`` gave."""
        if self._onnx is not None:
            return self._onnx.predict(_as_inputs(inputs), context)
        if not callable(self.model):
            raise ModelFailed("no predict_fn, and the model model_fn returned is not callable")
        try:
            return _as_outputs(self.config.executor.call(self.model, inputs))
        except ServingError:
            raise
        except Exception as exc:  # user code: any exception is the model's failure
            raise _hook_error("the model from model_fn", exc) from exc


def _run_stages(
    executor: Executor, stages: list[tuple[Callable[[Any], Any], bool]], value: Any
) -> Any:
    """Pass ``value`` through ``stages`` in order. Consecutive user hooks (``True``) run off
    the event loop in one call, as the AWS toolkit runs a request's hooks one after another
    in one thread: a hop each would let other requests' hooks in between, and a request
    whose ``predict_fn`` had ended would wait behind theirs for its ``output_fn``. The
    server's own stages (its codecs, its batched ONNX run) stay where they are."""
    index = 0
    while index < len(stages):
        function, is_hook = stages[index]
        if not is_hook:
            value = function(value)
            index += 1
            continue
        hooks = []
        while index < len(stages) and stages[index][1]:
            hooks.append(stages[index][0])
            index += 1
        value = executor.call(_through, hooks, value)
    return value


def _through(functions: list[Callable[[Any], Any]], value: Any) -> Any:
    for function in functions:
        value = function(value)
    return value


def _as_inputs(data: Any) -> Inputs:
    """What ``input_fn`` returned (arrays, nested lists, or a dict of them) as model inputs."""
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, dict):
        return {
            str(name): value
            if isinstance(value, np.ndarray)
            else as_numeric_array(value, f"input {name!r}")
            for name, value in data.items()
        }
    return as_numeric_array(data, "input_fn's result")


def _as_outputs(prediction: Any) -> Outputs:
    """A prediction as outputs by name, for the codecs: a dict keeps its names."""
    if isinstance(prediction, dict):
        return {str(name): np.asarray(value) for name, value in prediction.items()}
    return {"predictions": np.asarray(prediction)}


def _reply(hook: str, result: Any, accept: str) -> Encoded:
    body, media_type = result, accept
    if isinstance(result, tuple) and len(result) == 2:
        body, media_type = result
    if isinstance(body, str):
        body = body.encode()
    if not isinstance(body, bytes | bytearray | memoryview) or not isinstance(media_type, str):
        raise ModelFailed(
            f"{hook} must return bytes, str or (bytes, content_type), got {type(result).__name__}"
        )
    return Encoded(bytes(body), media_type)
