"""The WSGI app in process: routes, and errors nobody planned for."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from werkzeug.test import Client

from handlers import HandlerConfig, InvocationContext
from handlers.onnx_handler import OnnxHandler
from handlers.tensors import Inputs, Outputs
from serving import Settings
from serving.app import create_app, load_model

CUSTOM = "X-Amzn-SageMaker-Custom-Attributes"


class BuggyHandler(OnnxHandler):
    def predict(self, inputs: Inputs, context: InvocationContext) -> Outputs:
        raise KeyError("a bug in the handler")


@pytest.fixture
def buggy(linear_model: Path) -> Client:
    config = HandlerConfig(model_dir=linear_model.parent)
    app = create_app(Settings.from_sources({}, cpus=1), make_handler=lambda: BuggyHandler(config))
    load_model(app)
    return Client(app)


def test_an_unexpected_error_is_a_500_without_details(
    buggy: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, "serving.app"):
        response = buggy.post(
            "/invocations",
            data=b"[[1, 2, 3, 4]]",
            headers={"Content-Type": "application/json", CUSTOM: "a=1"},
        )
    assert response.status_code == 500
    assert response.json == {"error": "internal server error"}
    assert response.headers[CUSTOM] == "a=1"
    assert "unexpected error in POST /invocations" in caplog.text
    assert "a bug in the handler" in caplog.text  # the traceback goes to the log only
    assert buggy.get("/ping").status_code == 200


def test_routes_answer_head_and_say_which_methods_they_allow(buggy: Client) -> None:
    head = buggy.head("/execution-parameters")
    assert head.status_code == 200
    assert head.headers["Content-Type"] == "application/json"
    assert int(head.headers["Content-Length"]) > 0
    refused = buggy.post("/ping", data=b"")
    assert refused.status_code == 405
    assert refused.headers["Allow"] == "GET, HEAD"
    assert refused.json == {"error": "405 Method Not Allowed: POST /ping"}
    missing = buggy.get("/models")
    assert missing.status_code == 404
    assert missing.json == {"error": "404 Not Found: GET /models"}
