"""The ONNX handler in process: which models may share a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from handlers import HandlerConfig
from handlers.errors import InvalidInput
from handlers.onnx_handler import OnnxHandler, TensorSpec
from tests.models import save_model


def two_inputs(path: Path, first: str | int, second: str | int) -> Path:
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["a"], ["out_a"]),
            helper.make_node("Identity", ["b"], ["out_b"]),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [first, 1]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [second, 1]),
        ],
        [
            helper.make_tensor_value_info("out_a", TensorProto.FLOAT, [first, 1]),
            helper.make_tensor_value_info("out_b", TensorProto.FLOAT, [second, 1]),
        ],
    )
    return save_model(graph, path / "model.onnx").parent


@pytest.mark.parametrize(
    ("first", "second", "batchable"),
    [("N", "N", True), ("N", "M", False), ("N", 1, False), (4, 4, False)],
)
def test_requests_share_runs_only_along_one_named_batch_dimension(
    tmp_path: Path, first: str | int, second: str | int, batchable: bool
) -> None:
    handler = OnnxHandler(HandlerConfig(model_dir=two_inputs(tmp_path / "m", first, second)))
    handler.load()
    assert handler.batchable is batchable


def test_a_single_input_with_a_free_first_dimension_batches(linear_model: Path) -> None:
    handler = OnnxHandler(HandlerConfig(model_dir=linear_model.parent))
    handler.load()
    assert handler.batchable


def test_an_input_of_one_value_per_row_takes_a_column_of_them() -> None:
    """A CSV column or RecordIO scalars arrive as [rows, 1] for an input declared [N]."""
    spec = TensorSpec("c", np.dtype(np.float32), ("N",))
    assert spec.conform(np.ones((5, 1))).shape == (5,)
    with pytest.raises(InvalidInput, match="expects rank 1"):
        spec.conform(np.ones((5, 2)))
