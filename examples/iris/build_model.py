"""Write ``model/model.onnx``: an iris classifier built with ``onnx.helper``, no downloads.

The weights are those of scikit-learn's ``LogisticRegression(max_iter=1000)`` fitted on the
iris data set (97% training accuracy), copied here so that building needs only ``onnx``.
Input ``features`` float32 [N, 4] (sepal length, sepal width, petal length, petal width, cm);
outputs ``probabilities`` float32 [N, 3] and ``label`` int64 [N] (0 setosa, 1 versicolor,
2 virginica).

Run: ``python examples/iris/build_model.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

COEFFICIENTS = np.array(
    [
        [-0.420239, 0.966931, -2.518944, -1.084595],
        [0.531869, -0.315269, -0.204106, -0.942762],
        [-0.11163, -0.651662, 2.72305, 2.027356],
    ],
    dtype=np.float32,
)
INTERCEPTS = np.array([9.841689, 2.224506, -12.066195], dtype=np.float32)
MODEL_PATH = Path(__file__).parent / "model" / "model.onnx"


def build() -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes=[
            helper.make_node("Gemm", ["features", "weights", "bias"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        name="iris_logistic_regression",
        inputs=[helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])],
        outputs=[
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        ],
        initializer=[
            numpy_helper.from_array(COEFFICIENTS, "weights"),
            numpy_helper.from_array(INTERCEPTS, "bias"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="build_model.py"
    )
    model.ir_version = 8  # readable by onnxruntime releases from 1.14 on
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    MODEL_PATH.parent.mkdir(exist_ok=True)
    onnx.save(build(), MODEL_PATH)
    print(f"wrote {MODEL_PATH}")
