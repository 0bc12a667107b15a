"""The three benchmark models, built with ``onnx.helper``, and a request body for each cell."""

from __future__ import annotations

import io
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.models import save_model

RNG = np.random.default_rng(2026)


def _weights(name: str, *shape: int) -> onnx.TensorProto:
    scale = 1.0 / np.sqrt(shape[-1] if len(shape) == 2 else np.prod(shape[1:]))
    return numpy_helper.from_array((RNG.normal(size=shape) * scale).astype(np.float32), name)


def logistic_regression(path: Path) -> Path:
    """4 features -> 3 class probabilities."""
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "logistic_regression",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        [_weights("w", 3, 4), _weights("b", 3)],
    )
    return save_model(graph, path)


def mlp(path: Path) -> Path:
    """256 -> 1024 -> 1024 -> 10, ReLU between."""
    sizes = [256, 1024, 1024, 10]
    nodes, weights, current = [], [], "x"
    for layer, (fan_in, fan_out) in enumerate(pairwise(sizes)):
        out = f"h{layer}" if layer < len(sizes) - 2 else "logits"
        nodes.append(helper.make_node("Gemm", [current, f"w{layer}", f"b{layer}"], [out], transB=1))
        weights += [_weights(f"w{layer}", fan_out, fan_in), _weights(f"b{layer}", fan_out)]
        if out != "logits":
            nodes.append(helper.make_node("Relu", [out], [f"{out}_relu"]))
            out = f"{out}_relu"
        current = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        weights,
    )
    return save_model(graph, path)


def conv_net(path: Path) -> Path:
    """[N, 3, 224, 224] -> conv 3x3/2 (16) -> ReLU -> conv 3x3/2 (32) -> ReLU -> pool -> 10."""
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "k1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "k2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c2"], ["r2"]),
            helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1),
        ],
        "conv_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [_weights("k1", 16, 3, 3, 3), _weights("k2", 32, 16, 3, 3), _weights("w", 10, 32),
         _weights("b", 10)],
    )  # fmt: skip
    return save_model(graph, path)


def input_array(model: str) -> np.ndarray:
    """One request's input (batch 1); values rounded to 4 decimals, as real JSON bodies are."""
    shape = {"logreg": (1, 4), "mlp": (1, 256), "conv": (1, 3, 224, 224)}[model]
    return RNG.random(size=shape).round(4).astype(np.float32)


def body(array: np.ndarray, media_type: str) -> bytes:
    if media_type == "application/json":
        return json.dumps(array.astype(np.float64).round(4).tolist()).encode()
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


BUILDERS = {"logreg": logistic_regression, "mlp": mlp, "conv": conv_net}
