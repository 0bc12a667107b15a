"""The baseline: a minimal hand-written SageMaker container app, the way users write one
(Flask, served by ``gunicorn -k gevent``), to compare against in the same run.

    MODEL_PATH=model.onnx gunicorn -k gevent -w 1 -b 127.0.0.1:8080 byo_app:app
"""

import io
import json
import os

import numpy as np
import onnxruntime as ort
from flask import Flask, Response, request

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(
    os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"]
)
input_name = session.get_inputs()[0].name

app = Flask(__name__)


@app.route("/ping")
def ping() -> Response:
    return Response(status=200)


@app.route("/invocations", methods=["POST"])
def invocations() -> Response:
    if request.content_type == "application/x-npy":
        data = np.load(io.BytesIO(request.data))
    else:
        data = np.array(json.loads(request.data), dtype=np.float32)
    outputs = session.run(None, {input_name: data.astype(np.float32)})
    if request.headers.get("Accept") == "application/x-npy":
        buffer = io.BytesIO()
        np.save(buffer, outputs[0])
        return Response(buffer.getvalue(), mimetype="application/x-npy")
    return Response(json.dumps({"predictions": outputs[0].tolist()}), mimetype="application/json")
