"""A classic SageMaker bring-your-own-container predictor, ported onto sagemaker-onnx-serving.

Before, this module was the whole server (``benchmarks/byo_app.py``'s shape): a Flask app that
loaded the model with onnxruntime at import, and answered ``/ping`` and ``/invocations``
itself, reading JSON or ``.npy`` by hand. Ported, it keeps only what is its own: ``/metadata``
and ``/feedback``. The server answers ``/ping`` and ``/invocations`` (every media type, the
errors, the timeouts) and loads the model in each worker:

    PYTHONPATH=examples/flask_byo serving serve --model-dir examples/iris/model \\
        --flask-app predictor:app
"""

from __future__ import annotations

import json
import logging
import os

from flask import Flask, Response, jsonify, request

CLASSES = ["setosa", "versicolor", "virginica"]

log = logging.getLogger(__name__)

app = Flask(__name__)


@app.get("/metadata")
def metadata() -> Response:
    """What this endpoint serves, for the team's dashboards."""
    return jsonify(model="iris", version=os.environ.get("MODEL_VERSION", "1"), classes=CLASSES)


@app.post("/feedback")
def feedback() -> tuple[Response, int]:
    """The true class of an earlier prediction, logged for the next training run."""
    document = request.get_json(silent=True)
    if not isinstance(document, dict) or document.get("label") not in CLASSES:
        return jsonify(error=f'send {{"label": one of {CLASSES}}}'), 400
    log.info("feedback %s", json.dumps(document, sort_keys=True))
    return jsonify(received=document["label"]), 202
