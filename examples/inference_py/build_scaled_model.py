"""Write ``model/model.onnx`` and ``model/scaler.json`` for the inference.py example.

The ONNX graph is the iris classifier of ``examples/iris`` folded onto standardized
features: it expects ``(cm - mean) / scale`` per column, the way a scikit-learn pipeline with a
``StandardScaler`` would be exported without its scaler. ``code/inference.py`` does that
scaling, so the model directory ships the scaler's numbers next to the model.

Run: ``python examples/inference_py/build_scaled_model.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "iris"))
from build_model import COEFFICIENTS, INTERCEPTS  # noqa: E402 - the iris example's weights

#: Per-feature mean and standard deviation of the iris data set (cm).
MEAN = np.array([5.843333, 3.057333, 3.758, 1.199333], dtype=np.float32)
SCALE = np.array([0.825301, 0.434411, 1.759404, 0.759693], dtype=np.float32)
LABELS = ["setosa", "versicolor", "virginica"]


def build() -> onnx.ModelProto:
    # logits = W x + b with x = z * scale + mean  =>  logits = (W * scale) z + (b + W mean)
    weights = (COEFFICIENTS * SCALE).astype(np.float32)
    bias = (INTERCEPTS + COEFFICIENTS @ MEAN).astype(np.float32)
    graph = helper.make_graph(
        nodes=[
            helper.make_node("Gemm", ["standardized", "weights", "bias"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        name="iris_on_standardized_features",
        inputs=[helper.make_tensor_value_info("standardized", TensorProto.FLOAT, ["N", 4])],
        outputs=[
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        ],
        initializer=[
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="build_scaled_model.py"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def scaler() -> dict[str, list[float] | list[str]]:
    return {"mean": MEAN.tolist(), "scale": SCALE.tolist(), "labels": LABELS}


if __name__ == "__main__":
    onnx.save(build(), HERE / "model" / "model.onnx")
    (HERE / "model" / "scaler.json").write_text(json.dumps(scaler(), indent=2) + "\n")
    print(f"wrote {HERE / 'model'}")
