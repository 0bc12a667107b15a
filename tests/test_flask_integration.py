"""The server's routes in front of a Flask app: in process, and in a real server."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.test import Client

from serving import Settings, SettingsError
from serving.app import ServingApp, load_model
from serving.flask_integration import FlaskMount, import_app, mount
from serving.server import ServingApplication
from tests.flask_apps import app as flask_app
from tests.server import ServerProcess, launch, running_server

ROOT = str(Path(__file__).parent.parent)
KEY = {"X-Key": "secret"}


@pytest.fixture
def settings(linear_model: Path) -> Settings:
    return Settings.from_sources({}, {"model_dir": str(linear_model.parent)}, cpus=1)


@pytest.fixture
def mounted(settings: Settings, caplog: pytest.LogCaptureFixture) -> FlaskMount:
    with caplog.at_level(logging.WARNING, "serving.flask_integration"):
        return mount(flask_app, settings)


def test_the_servers_routes_never_enter_flask(mounted: FlaskMount) -> None:
    client = Client(mounted)
    assert client.get("/ping").status_code == 503  # not loaded: the truth, not Flask's ping
    worker_wsgi: Any = mounted  # as post_worker_init reaches it: gunicorn's worker.wsgi
    load_model(worker_wsgi)
    ping = client.get("/ping")
    assert (ping.status_code, ping.data) == (200, b"")
    answer = client.post(
        "/invocations", data=b"[[1, 2, 3, 4]]", headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    assert list(answer.json or {}) == ["predictions"]
    refused = client.post("/invocations", data=b"x", headers={"Content-Type": "text/plain"})
    assert refused.status_code == 415
    assert "text/plain" in (refused.json or {})["error"]
    assert client.get("/invocations").status_code == 405
    assert client.get("/execution-parameters").json == {
        "MaxConcurrentTransforms": 1,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 6,
    }


def test_every_other_path_is_flasks(mounted: FlaskMount) -> None:
    client = Client(mounted)
    assert client.get("/stream").status_code == 401  # the app's before_request ran
    assert client.get("/stream", headers=KEY).text == "line 0\nline 1\nline 2\n"
    missing = client.get("/nowhere", headers=KEY)
    assert missing.status_code == 404
    assert missing.mimetype == "text/html"  # Flask's page: the path is the app's
    assert client.get("/models", headers=KEY).status_code == 404  # no multi-model endpoint


def test_a_body_of_unknown_length_ends_with_the_connection(mounted: FlaskMount) -> None:
    client = Client(mounted)
    streamed = client.get("/stream", headers=KEY)
    assert "Content-Length" not in streamed.headers
    assert streamed.headers["Connection"] == "close"
    sized = client.post("/digest", data=b"abc", headers=KEY)
    assert sized.headers["Content-Length"] == str(len(sized.data))
    assert "Connection" not in sized.headers
    assert "Connection" not in client.head("/stream", headers=KEY).headers


def test_flask_routes_the_server_answers_are_named_in_a_warning(
    mounted: FlaskMount, caplog: pytest.LogCaptureFixture
) -> None:
    records = caplog.get_records("setup")  # logged by mount()
    assert [r.getMessage() for r in records if r.name == "serving.flask_integration"] == [
        "the Flask app's route /ping (ping) is never called: the server answers that path itself",
        "the Flask app's route /invocations (invocations) is never called: the server answers "
        "that path itself",
    ]


def test_the_plain_app_runs_unless_a_flask_app_is_named(settings: Settings) -> None:
    """The default path has no dispatcher in front of it."""
    assert type(ServingApplication(settings).load()) is ServingApp
    named = ServingApplication(replace(settings, flask_app="tests.flask_apps:app"))
    mounted = named.load()
    assert isinstance(mounted, FlaskMount)
    assert mounted.flask_app is flask_app


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tests.nowhere:app", "SERVING_FLASK_APP='tests.nowhere:app' cannot be imported: No "),
        ("tests.flask_apps:application", "tests.flask_apps has no 'application'"),
        ("tests.flask_apps:not_an_app", "is a str, not a Flask (WSGI) app"),
    ],
)
def test_an_app_that_cannot_be_imported_is_named(name: str, message: str) -> None:
    with pytest.raises(SettingsError, match=r"^SERVING_FLASK_APP=") as raised:
        import_app(name)
    assert message in str(raised.value)


@pytest.mark.parametrize("value", ["tests.flask_apps", "app", "a b:app", "pkg.:app", ":app"])
def test_the_setting_takes_module_colon_attribute(value: str) -> None:
    with pytest.raises(SettingsError, match=f"^invalid SERVING_FLASK_APP={value!r}: not a module"):
        Settings.from_sources({"SERVING_FLASK_APP": value}, cpus=1)
    assert Settings.from_sources({"SERVING_FLASK_APP": " "}, cpus=1).flask_app is None


@pytest.fixture(scope="module")
def server(linear_model: Path, model_root: Path) -> Iterator[ServerProcess]:
    arguments = ["--model-dir", str(linear_model.parent), "--max-payload-mb", "1"]
    environ = {"SERVING_FLASK_APP": "tests.flask_apps:app", "PYTHONPATH": ROOT}
    with running_server(arguments, model_root / "flask.log", environ) as server:
        yield server


def test_a_real_server_serves_both(server: ServerProcess) -> None:
    answer = server.post("/invocations", b"[[1, 2, 3, 4]]", {"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert server.get("/ping").content == b""
    assert server.get("/stream").status_code == 401
    digest = server.post("/digest", b"abc", KEY)
    assert digest.json() == {"length": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}


def test_flask_reads_a_body_past_one_read_whole(server: ServerProcess) -> None:
    """The worker's bodies give at most 16 MiB a read; Flask gets every byte (the server's
    body limit, 1 MiB here, is for /invocations)."""
    body = os.urandom(17 << 20)
    digest = server.post("/digest", body, KEY)
    assert digest.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_a_streamed_answer_arrives_whole_and_the_next_request_too(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\nX-Key: secret\r\n\r\n")
        received = b""
        while chunk := connection.recv(65536):  # the server closes: the body's end
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"Connection: close" in head.split(b"\r\n")
    assert body == b"line 0\nline 1\nline 2\n"
    assert server.get("/stream").status_code == 401


def test_a_chunked_body_reaches_flask_through_gunicorn(server: ServerProcess) -> None:
    parts = iter([b"ab", b"c"])  # a generator body: requests sends it chunked
    response = requests.post(server.url("/digest"), data=parts, headers=KEY, timeout=10)
    assert response.json() == {"length": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}


def test_an_app_that_cannot_be_imported_stops_the_server(
    linear_model: Path, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    arguments = ["--model-dir", str(linear_model.parent), "--flask-app", "nowhere_at_all:app"]
    process, _ = launch(arguments, log)
    try:
        returncode = process.wait(timeout=60)
    finally:
        process.kill()
    assert returncode == 3
    assert "SERVING_FLASK_APP='nowhere_at_all:app' cannot be imported" in log.read_text()


def test_a_multi_model_endpoint_keeps_its_models_routes(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    environ = {
        "SAGEMAKER_MULTI_MODEL": "true",
        "SAGEMAKER_BASE_DIR": str(tmp_path),
        "SERVING_FLASK_APP": "tests.flask_apps:app",
        "PYTHONPATH": ROOT,
    }
    with running_server([], tmp_path / "server.log", environ) as server:
        assert server.get("/models").json() == {"models": []}
        assert server.get("/models/absent").status_code == 404
        assert server.get("/models/absent").json()["error"]  # the server's JSON, not Flask's
        assert server.get("/modelsx").status_code == 401  # the app's
