"""The ONNX handler: one onnxruntime session per worker, inputs checked against the model."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .base import Handler, InvocationContext
from .errors import InvalidInput, ModelFailed, ModelLoadError
from .execution import Feeds, current_stop
from .providers import (
    GPU_PROVIDERS,
    check_session_providers,
    choose_providers,
    provider_options,
    visible_gpus,
)
from .tensors import Array, Inputs, Outputs, describe, is_numeric

log = logging.getLogger(__name__)

#: ONNX tensor element types this handler serves, and the numpy dtype of each.
ONNX_TO_NUMPY: dict[str, np.dtype[Any]] = {
    f"tensor({onnx_name})": np.dtype(numpy_name)
    for onnx_name, numpy_name in {
        "float": "float32",
        "double": "float64",
        "float16": "float16",
        "int8": "int8",
        "int16": "int16",
        "int32": "int32",
        "int64": "int64",
        "uint8": "uint8",
        "uint16": "uint16",
        "uint32": "uint32",
        "uint64": "uint64",
        "bool": "bool",
    }.items()
}

#: Model error messages are cut to this length: SageMaker passes at most 2048 characters of a
#: container's error body on to the caller.
MAX_MODEL_MESSAGE = 1000

Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    """A model input as declared: name, dtype and shape (``None``/names for free dims)."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[Dim, ...]

    def shape_text(self) -> str:
        return "[" + ", ".join(str(d) if d not in (None, "") else "?" for d in self.shape) + "]"

    def conform(self, array: Array) -> Array:
        """``array`` cast to this input's dtype, or :class:`InvalidInput` saying why not."""
        what = f"input {self.name!r}"
        if array.ndim == len(self.shape) + 1 and array.shape[-1] == 1:
            # One value a record, as CSV and RecordIO write it, for an input of one per row.
            array = array.reshape(array.shape[:-1])
        if len(array.shape) != len(self.shape):
            raise InvalidInput(
                f"{what} expects rank {len(self.shape)} {self.shape_text()}, "
                f"got rank {array.ndim} {list(array.shape)}"
            )
        for axis, (want, got) in enumerate(zip(self.shape, array.shape, strict=True)):
            if isinstance(want, int) and want > 0 and want != got:
                raise InvalidInput(
                    f"{what} expects shape {self.shape_text()}, got {list(array.shape)} "
                    f"(dimension {axis} must be {want})"
                )
        return self._cast(array, what)

    def _cast(self, array: Array, what: str) -> Array:
        if array.dtype == self.dtype:
            return array
        if not is_numeric(array):
            raise InvalidInput(f"{what} expects {self.dtype}, got {describe(array)}")
        if array.dtype.kind == "f" and self.dtype.kind in "iu" and array.size:
            # A float holds integers exactly only up to 2**(mantissa bits + 1): CSV, or JSON
            # mixing integers and floats, cannot carry a bigger int64 without rounding it.
            exact = 2.0 ** (np.finfo(array.dtype).nmant + 1)
            if np.abs(array).max() >= exact:
                raise InvalidInput(
                    f"{what} expects {self.dtype}, and some values are beyond {exact:.0f}, where "
                    f"{array.dtype} rounds integers; send them as JSON integers or .npy"
                )
        cast = array.astype(self.dtype)
        # Narrowing floats is how float64 JSON/CSV numbers reach float32 models; anything else
        # that can lose information (fractions to integers, 2 to bool, int64 overflowing
        # int32) must round-trip exactly.
        lossy = not np.can_cast(array.dtype, self.dtype, "safe") and self.dtype.kind != "f"
        if lossy and not np.array_equal(cast, array):
            raise InvalidInput(
                f"{what} expects {self.dtype}; the {array.dtype} values sent do not all "
                f"convert exactly (fractions, out-of-range values, or non-0/1 for bool)"
            )
        return cast


def find_model_file(model_dir: Path, model_file: str | None) -> Path:
    """The ONNX file to load: ``model_file`` if named, else the one ``*.onnx`` in the dir."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    if model_file:
        path = model_dir / model_file
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist")
        return path
    found = sorted(model_dir.glob("*.onnx"))
    if len(found) == 1:
        return found[0]
    if not found:
        listing = ", ".join(sorted(p.name for p in model_dir.iterdir())[:10]) or "nothing"
        raise ModelLoadError(f"no *.onnx file in {model_dir} (it holds: {listing})")
    names = ", ".join(p.name for p in found)
    raise ModelLoadError(
        f"{len(found)} *.onnx files in {model_dir} ({names}); name one with SERVING_MODEL_FILE"
    )


class OnnxHandler(Handler):
    """Serves the model directory's ONNX file with onnxruntime."""

    session: Any
    inputs: list[TensorSpec]
    output_names: list[str]
    #: Whether requests can share a run: every input and output has a free first dimension.
    batchable: bool
    _invalid_argument: type[Exception]
    _run_options: Any

    def load(self) -> None:
        try:
            import onnxruntime as ort  # here, not at import: only workers pay for it
        except ImportError as exc:
            raise ModelLoadError(
                f"onnxruntime cannot be imported ({exc}); install "
                "sagemaker-onnx-serving[cpu] or sagemaker-onnx-serving[gpu]"
            ) from exc

        path = find_model_file(self.config.model_dir, self.config.model_file)
        providers = choose_providers(self.config.providers, ort.get_available_providers())
        gpus = visible_gpus()
        device = self.config.worker_index % gpus if gpus else 0
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.config.threads
        options.inter_op_num_threads = 1
        # Fatal only: onnxruntime writes its own multi-line, coloured error logs to stderr, and
        # every failure already reaches our log with its message.
        options.log_severity_level = 4
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=provider_options(providers, device)
            )
        except Exception as exc:  # onnxruntime raises its own classes for every load failure
            raise ModelLoadError(f"onnxruntime cannot load {path}: {exc}") from exc
        in_use = self.session.get_providers()
        check_session_providers(providers, in_use, self.config.allow_cpu_fallback)
        self._invalid_argument = ort.capi.onnxruntime_pybind11_state.InvalidArgument
        self._run_options = ort.RunOptions
        self.inputs = [self._spec(arg) for arg in self.session.get_inputs()]
        self.output_names = self._tensor_outputs()
        output_shapes = [o.shape for o in self.session.get_outputs() if o.name in self.output_names]
        self.batchable = _one_batch_dim([spec.shape for spec in self.inputs]) and all(
            _free_first_dim(shape) for shape in output_shapes
        )
        self.splits_records = self.batchable
        log.info(
            "loaded %s: inputs %s, outputs %s, providers %s%s%s",
            path,
            ", ".join(f"{s.name} {s.dtype} {s.shape_text()}" for s in self.inputs),
            ", ".join(self.output_names),
            ", ".join(in_use),
            f" on GPU {device}" if set(in_use) & set(GPU_PROVIDERS) else "",
            ", batchable" if self.batchable else "",
        )

    @staticmethod
    def _spec(arg: Any) -> TensorSpec:
        dtype = ONNX_TO_NUMPY.get(arg.type)
        if dtype is None:
            raise ModelLoadError(
                f"input {arg.name!r} has type {arg.type}; supported: {', '.join(ONNX_TO_NUMPY)}"
            )
        return TensorSpec(arg.name, dtype, tuple(arg.shape))

    def _tensor_outputs(self) -> list[str]:
        outputs = self.session.get_outputs()
        names = [out.name for out in outputs if out.type in ONNX_TO_NUMPY]
        skipped = [f"{out.name} ({out.type})" for out in outputs if out.type not in ONNX_TO_NUMPY]
        if skipped:
            log.warning("not serving non-tensor outputs: %s", ", ".join(skipped))
        if not names:
            raise ModelLoadError(f"the model has no tensor outputs ({', '.join(skipped)})")
        return names

    def feeds(self, inputs: Inputs) -> Feeds:
        """Request data by model input name, each checked and cast."""
        if not isinstance(inputs, dict):
            if len(self.inputs) != 1:
                names = ", ".join(spec.name for spec in self.inputs)
                raise InvalidInput(
                    f"the model has {len(self.inputs)} inputs ({names}); send them by name "
                    '(JSON {"inputs": {"name": [...]}}, or application/x-npz)'
                )
            return {self.inputs[0].name: self.inputs[0].conform(inputs)}
        known = {spec.name for spec in self.inputs}
        unknown = sorted(set(inputs) - known)
        if unknown:
            raise InvalidInput(
                f"unknown input {unknown[0]!r}; the model's inputs are {', '.join(sorted(known))}"
            )
        missing = [spec.name for spec in self.inputs if spec.name not in inputs]
        if missing:
            raise InvalidInput(f"missing input {missing[0]!r}")
        feeds = {spec.name: spec.conform(inputs[spec.name]) for spec in self.inputs}
        self._check_named_dims(feeds)
        return feeds

    def _check_named_dims(self, feeds: Feeds) -> None:
        """Dimensions the model names alike (``N``) must have one size across inputs."""
        sizes: dict[str, tuple[int, str]] = {}
        for spec in self.inputs:
            for axis, dim in enumerate(spec.shape):
                if not isinstance(dim, str) or not dim:
                    continue
                size = feeds[spec.name].shape[axis]
                seen = sizes.setdefault(dim, (size, spec.name))
                if seen[0] != size:
                    raise InvalidInput(
                        f"dimension {dim} is {seen[0]} in input {seen[1]!r} "
                        f"but {size} in input {spec.name!r}"
                    )

    def accept_types(self) -> Sequence[str] | None:
        """The codecs' types, less ``.npy`` when the model has several outputs to write."""
        offers = super().accept_types()
        if offers is None or len(self.output_names) == 1:
            return offers
        return [media_type for media_type in offers if media_type != "application/x-npy"]

    def predict(self, inputs: Inputs, context: InvocationContext) -> Outputs:
        return self.config.executor.run(self.run, self.feeds(inputs), batchable=self.batchable)

    def run(self, feeds: Feeds) -> Outputs:
        """One onnxruntime run on checked feeds; blocking, safe from any thread. A run that
        is given up on (:func:`~handlers.execution.current_stop`) ends at its next node."""
        stop, options = current_stop(), None
        if stop is not None:
            options = self._run_options()
            stop.on_request(partial(setattr, options, "terminate", True))
        try:
            results = self.session.run(self.output_names, feeds, options)
        except self._invalid_argument as exc:  # a check onnxruntime makes that ours do not
            raise InvalidInput(f"the model refused the input: {_cut(exc)}") from exc
        except Exception as exc:  # whatever else the model raises is the model's failure
            raise ModelFailed(f"the model failed: {_cut(exc)}") from exc
        return dict(zip(self.output_names, results, strict=True))


def _free_first_dim(shape: Any) -> bool:
    return bool(shape) and not (isinstance(shape[0], int) and shape[0] > 0)


def _one_batch_dim(shapes: list[tuple[Dim, ...]]) -> bool:
    """Whether every input's first dimension is free and, with several inputs, one named
    dimension (``N``): only then do requests stack along it without mixing rows."""
    if not all(_free_first_dim(shape) for shape in shapes):
        return False
    if len(shapes) == 1:
        return True
    names = {shape[0] for shape in shapes}
    return len(names) == 1 and isinstance(next(iter(names)), str) and bool(next(iter(names)))


def _cut(exc: Exception) -> str:
    return str(exc).strip()[:MAX_MODEL_MESSAGE]
