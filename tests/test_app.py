"""The WSGI app in process: routes, and errors nobody planned for."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import IO, Any

import pytest
from werkzeug.test import Client

from handlers import HandlerConfig, InvocationContext
from handlers.onnx_handler import OnnxHandler
from handlers.tensors import Inputs, Outputs
from serving import Settings
from serving.app import create_app, load_model
from tests.test_records import CSV, csv_body, rows

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


def test_the_smallest_chunk_setting_still_reads_every_line(linear_model: Path) -> None:
    settings = Settings.from_sources(
        {"SERVING_RECORD_CHUNK_MB": "0.0000001"}, {"model_dir": str(linear_model.parent)}, cpus=1
    )
    assert int(settings.record_chunk_mb * 1024 * 1024) == 0  # rounds down to nothing
    app = create_app(settings)
    load_model(app)
    body = csv_body(rows(20))
    response = Client(app).post(
        "/invocations", data=body, headers={"Content-Type": CSV, "Accept": CSV}
    )
    assert response.status_code == 200, response.text
    assert response.data.count(b"\n") == 20


def test_answers_past_the_spool_limit_are_sent_from_a_file_closed_after_sending(
    linear_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files: list[IO[bytes]] = []
    make_file = tempfile.TemporaryFile

    def recording(*args: Any, **kwargs: Any) -> IO[bytes]:
        files.append(make_file(*args, **kwargs))
        return files[-1]

    monkeypatch.setattr(tempfile, "TemporaryFile", recording)
    settings = Settings.from_sources(
        {"SERVING_RECORD_CHUNK_MB": "0.002", "SERVING_RECORD_SPOOL_MB": "0.01"},
        {"model_dir": str(linear_model.parent)},
        cpus=1,
    )
    app = create_app(settings)
    load_model(app)
    response = Client(app).post(
        "/invocations", data=csv_body(rows(2_000)), headers={"Content-Type": CSV, "Accept": CSV}
    )
    assert response.status_code == 200, response.text
    assert len(files) == 1  # past 10 KB of answers
    assert not files[0].closed  # the response is read from it
    assert response.data.count(b"\n") == 2_000
    response.close()
    assert files[0].closed
