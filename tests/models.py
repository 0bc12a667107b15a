"""Tiny ONNX models for the tests, built with ``onnx.helper``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WEIGHTS = np.arange(12, dtype=np.float32).reshape(4, 3) / 10 - 0.5
BIAS = np.array([0.25, -1.0, 0.5], dtype=np.float32)


def save_model(graph: onnx.GraphProto, path: Path) -> Path:
    """Write ``graph`` as a checked opset-17 model readable by onnxruntime 1.14 and newer."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def linear(path: Path) -> Path:
    """x float32 [N, 4] -> y float32 [N, 3]: one input, one output."""
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(WEIGHTS, "w"), numpy_helper.from_array(BIAS, "b")],
    )
    return save_model(graph, path)


def mixed(path: Path) -> Path:
    """Several inputs and outputs of float, integer and boolean types.

    a float32 [N, 3], b int64 [N, 3], c bool [N] ->
    total float32 [N, 3] = a + b, doubled int64 [N, 3] = 2 b, negated bool [N] = not c.
    """
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["a", "b_float"], ["total"]),
            helper.make_node("Add", ["b", "b"], ["doubled"]),
            helper.make_node("Not", ["c"], ["negated"]),
        ],
        "mixed",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 3]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, ["N"]),
        ],
        [
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("doubled", TensorProto.INT64, ["N", 3]),
            helper.make_tensor_value_info("negated", TensorProto.BOOL, ["N"]),
        ],
    )
    return save_model(graph, path)


def failing(path: Path) -> Path:
    """x float32 [N] reshaped to [2, 2]: runs for N = 4, and the model fails for other N."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "failing",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        [numpy_helper.from_array(np.array([2, 2], dtype=np.int64), "shape")],
    )
    return save_model(graph, path)


def softmax(path: Path) -> Path:
    """probabilities float32 [N, 3] = softmax(x float32 [N, 3]): takes what linear writes."""
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["probabilities"], axis=-1)],
        "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
    )
    return save_model(graph, path)


def slow(path: Path) -> Path:
    """x float32 [N, 1] -> y float32 [64, 256]: repeats a 64x256 by 256x256 product and a tanh
    as many times as x's largest value says, about 0.05 ms a time on one thread."""
    state = [64, 256]
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["state_in", "w"], ["product"]),
            helper.make_node("Tanh", ["product"], ["state_out"]),
            helper.make_node("Identity", ["go_on_in"], ["go_on_out"]),
        ],
        "step",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("go_on_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, state),
        ],
        [
            helper.make_tensor_value_info("go_on_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, state),
        ],
    )
    true = helper.make_tensor("true", TensorProto.BOOL, [], [True])
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["x"], ["largest"], keepdims=0),
            helper.make_node("Cast", ["largest"], ["times"], to=TensorProto.INT64),
            helper.make_node("Constant", [], ["go_on"], value=true),
            helper.make_node("Expand", ["zero", "shape"], ["start"]),
            helper.make_node("Loop", ["times", "go_on", "start"], ["y"], body=body),
        ],
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, state)],
        [
            numpy_helper.from_array(np.eye(256, dtype=np.float32), "w"),
            numpy_helper.from_array(np.zeros((), np.float32), "zero"),
            numpy_helper.from_array(np.array(state, np.int64), "shape"),
        ],
    )
    return save_model(graph, path)
