"""Iris species from raw measurements, in the AWS inference toolkit's style.

The ONNX model wants standardized features and answers with class numbers; this module
scales the centimetres clients send and answers with species names.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort


class UnsupportedFormat(ValueError):
    """Raised for a content type this module cannot read; ``status_code`` sets the response."""

    status_code = 415


def model_fn(model_dir: str, context: Any) -> dict[str, Any]:
    scaler = json.loads((Path(model_dir) / "scaler.json").read_text())
    session = ort.InferenceSession(
        str(Path(model_dir) / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return {
        "session": session,
        "mean": np.array(scaler["mean"], dtype=np.float32),
        "scale": np.array(scaler["scale"], dtype=np.float32),
        "labels": scaler["labels"],
        "loaded_from": context.system_properties["model_dir"],
    }


def input_fn(input_data: str, content_type: str) -> Any:
    """Centimetres: CSV rows, or JSON {"flowers": [[sepal_length, ...], ...]} (both arrive as
    text, as in the toolkit)."""
    if content_type == "text/csv":
        return np.loadtxt(input_data.splitlines(), delimiter=",", ndmin=2)
    if content_type == "application/json":
        return np.array(json.loads(input_data)["flowers"], dtype=np.float64)
    raise UnsupportedFormat(f"cannot read {content_type}; send text/csv or application/json")


def predict_fn(data: Any, model: dict[str, Any]) -> dict[str, Any]:
    standardized = ((data - model["mean"]) / model["scale"]).astype(np.float32)
    probabilities, label = model["session"].run(None, {"standardized": standardized})
    return {"probabilities": probabilities, "species": [model["labels"][i] for i in label]}


def output_fn(prediction: dict[str, Any], accept: str, context: Any) -> tuple[str, str]:
    species = prediction["species"]
    context.set_response_header(0, "X-Amzn-SageMaker-Custom-Attributes", "labels=iris-v1")
    if accept == "text/csv":
        return "".join(f"{name}\n" for name in species), "text/csv"
    document = {"species": species, "probabilities": prediction["probabilities"].tolist()}
    return json.dumps(document), "application/json"
