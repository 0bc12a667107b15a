"""Content-Type and Accept negotiation, in process, with a handler that counts model runs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from werkzeug.test import Client

from handlers import HandlerConfig, InvocationContext
from handlers.base import Encoded
from handlers.errors import InvalidInput
from handlers.onnx_handler import OnnxHandler
from handlers.tensors import Inputs, Outputs
from serving import Settings
from serving.app import ServingApp, create_app, load_model
from serving.negotiation import choose_accept
from tests.wire import npy_bytes

BODY = b"[[1, 2, 3, 4]]"


class CountingHandler(OnnxHandler):
    runs = 0

    def predict(self, inputs: Inputs, context: InvocationContext) -> Outputs:
        CountingHandler.runs += 1
        return super().predict(inputs, context)


def make_app(model: Path, **settings: str) -> ServingApp:
    config = HandlerConfig(model_dir=model.parent)
    app = create_app(
        Settings.from_sources(settings, cpus=1), make_handler=lambda: CountingHandler(config)
    )
    load_model(app)
    return app


@pytest.fixture
def client(linear_model: Path) -> Client:
    CountingHandler.runs = 0
    return Client(make_app(linear_model))


@pytest.mark.parametrize(
    ("content_type", "accept", "chosen"),
    [
        ("application/json", None, "application/json"),
        ("application/json", "*/*", "application/json"),
        ("application/json; charset=utf-8", "*/*", "application/json"),
        ("APPLICATION/JSON", "", "application/json"),
        ("text/csv; charset=utf-8", "text/csv", "text/csv"),
        ("application/json", "text/*", "text/csv"),
        ("application/json", "application/x-npy", "application/x-npy"),
        ("application/json", "text/csv;q=0.5, application/jsonlines", "application/jsonlines"),
        ("application/json", "text/csv;q=0.9, application/x-npy;q=0.1", "text/csv"),
        ("application/json", "image/gif, text/csv;q=0.2", "text/csv"),
        ("application/json", "application/json; charset=utf-8", "application/json"),
        ("application/json", "application/*;q=0.8, application/x-npz", "application/x-npz"),
        ("application/json", "*/*;q=0.1, text/csv", "text/csv"),
    ],
)
def test_negotiated(client: Client, content_type: str, accept: str | None, chosen: str) -> None:
    body = b"1,2,3,4\n" if content_type.startswith("text/csv") else BODY
    headers = {"Content-Type": content_type}
    if accept is not None:
        headers["Accept"] = accept
    response = client.post("/invocations", data=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == chosen  # bare: no charset appended
    assert CountingHandler.runs == 1


@pytest.mark.parametrize(
    ("headers", "status", "fragment"),
    [
        ({"Content-Type": "text/plain"}, 415, "Content-Type text/plain is not supported"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json, "),
        ({}, 415, "no Content-Type"),
        ({"Content-Type": "application/json", "Accept": "image/gif"}, 406, "image/gif"),
        ({"Content-Type": "application/json", "Accept": "text/csv;q=0"}, 406, "available"),
        ({"Content-Type": "text/plain", "Accept": "image/gif"}, 415, "text/plain"),
    ],
)
def test_refused_before_the_model_runs(
    client: Client, headers: dict[str, str], status: int, fragment: str
) -> None:
    # An undecodable body proves nothing was decoded either: decoding would give 400.
    response = client.post("/invocations", data=b"\x00not decodable", headers=headers)
    assert response.status_code == status
    assert fragment in response.json["error"]  # type: ignore[index]
    assert CountingHandler.runs == 0


def test_default_accept_setting(linear_model: Path) -> None:
    app = make_app(linear_model, SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT="text/csv")
    response = Client(app).post(
        "/invocations", data=BODY, headers={"Content-Type": "application/json"}
    )
    assert response.headers["Content-Type"] == "text/csv"
    explicit = Client(app).post(
        "/invocations", data=BODY, headers={"Content-Type": "application/json", "Accept": "*/*"}
    )
    assert explicit.headers["Content-Type"] == "text/csv"


def test_ping_and_invocations_before_the_model_is_loaded(linear_model: Path) -> None:
    config = HandlerConfig(model_dir=linear_model.parent)
    app = create_app(
        Settings.from_sources({}, cpus=1), make_handler=lambda: CountingHandler(config)
    )
    client = Client(app)
    assert client.get("/ping").status_code == 503
    response = client.post("/invocations", data=BODY, headers={"Content-Type": "application/json"})
    assert response.status_code == 503
    assert client.get("/ping").status_code == 503  # never loads on demand
    load_model(app)
    assert client.get("/ping").status_code == 200
    assert client.get("/ping").data == b""


def test_handler_may_replace_custom_attributes(linear_model: Path) -> None:
    class Replacing(OnnxHandler):
        def predict(self, inputs: Inputs, context: InvocationContext) -> Outputs:
            context.custom_attributes = f"seen={context.custom_attributes}"
            return super().predict(inputs, context)

    config = HandlerConfig(model_dir=linear_model.parent)
    app = create_app(Settings.from_sources({}, cpus=1), make_handler=lambda: Replacing(config))
    load_model(app)
    response = Client(app).post(
        "/invocations",
        data=npy_bytes(np.ones((1, 4), np.float32)),
        headers={"Content-Type": "application/x-npy", "X-Amzn-SageMaker-Custom-Attributes": "a=1"},
    )
    assert response.status_code == 200
    assert response.headers["X-Amzn-SageMaker-Custom-Attributes"] == "seen=a=1"


class WritesAnything(OnnxHandler):
    """Takes and writes any media type, echoing what was negotiated."""

    def content_types(self) -> None:
        return None

    def accept_types(self) -> None:
        return None

    def invoke(self, body: bytes, context: InvocationContext) -> Encoded:
        return Encoded(context.accept.encode(), "text/plain")


@pytest.mark.parametrize(
    ("accept", "passed"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("text/csv", "text/csv"),
        ("text/csv, */*;q=0.1", "text/csv"),
        ("text/csv;q=0.1, */*", "application/json"),
        ("application/json;q=0.5, application/x-thing", "application/x-thing"),
        ("text/*", "text/*"),  # the handler decides what a wildcard means
    ],
)
def test_a_handler_that_writes_any_type_gets_the_clients_preference(
    linear_model: Path, accept: str | None, passed: str
) -> None:
    config = HandlerConfig(model_dir=linear_model.parent)
    app = create_app(Settings.from_sources({}, cpus=1), make_handler=lambda: WritesAnything(config))
    load_model(app)
    headers = {"Content-Type": "application/x-anything"}
    if accept is not None:
        headers["Accept"] = accept
    response = Client(app).post("/invocations", data=b"?", headers=headers)
    assert response.status_code == 200
    assert response.data == passed.encode()


def test_a_hostile_accept_costs_the_event_loop_little() -> None:
    def accept(seed: int) -> str:  # new each time, so no cache helps
        return ", ".join(f"application/x-{seed}-{i};q=0.{i % 9 + 1}" for i in range(280))

    started = time.perf_counter()
    for seed in range(50):
        with pytest.raises(InvalidInput, match="Accept header is 7"):
            choose_accept(accept(seed), ("application/json",), "application/json")
    assert (time.perf_counter() - started) / 50 < 0.0003  # parsed, each took 2.7 ms


def test_an_accept_as_long_as_sagemaker_allows_is_parsed() -> None:
    accept = ", ".join(["text/csv;q=0.5"] * 68)[:1024]
    assert len(accept) == 1024
    assert choose_accept(accept, ("application/json", "text/csv"), "application/json") == "text/csv"
