"""``serving endpoint`` as a process: the containers it starts, replaces and stops, its exit
statuses, and the settings and configuration it refuses."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from tests.endpoint import (
    CSV,
    IRIS,
    invoke,
    launch,
    no_retries,
    running_endpoint,
    wait_gone,
)
from tests.server import children
from tests.test_process import run_cli


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    return [pid, *(grandchild for child in children(pid) for grandchild in tree(child))]


def test_it_starts_a_container_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    with running_endpoint(["iris", "--model-dir", str(IRIS)], tmp_path / "api.log") as api:
        answer = invoke(no_retries(api.port), EndpointName="iris", Body=CSV, ContentType="text/csv")
        assert answer["InvokedProductionVariant"] == "AllTraffic"
        (master,) = api.container_pids()
        started = tree(master)
        assert len(started) == 2  # the container's master and its one worker
        assert set(started) <= set(tree(api.process.pid))
    assert api.process.returncode == 0
    assert wait_gone(started) == []
    assert "stopped" in api.log()


def test_a_container_that_dies_is_replaced(tmp_path: Path) -> None:
    with running_endpoint(["iris", "--model-dir", str(IRIS)], tmp_path / "api.log") as api:
        (first,) = api.container_pids()
        doomed = tree(first)
        os.kill(first, signal.SIGKILL)
        api.wait_for_log(r"exited with status -9; starting another")
        assert wait_gone(doomed) == []  # its worker went with it
        api.wait_for_log(r"started serving serve .*\(pid \d+\)\n", count=2)
        api.wait_for_log(r"answers /ping", count=2)  # until then, ServiceUnavailable
        runtime = no_retries(api.port)
        answer = invoke(runtime, EndpointName="iris", Body=CSV, ContentType="text/csv")
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        (_, second) = api.container_pids()
        assert second != first


def test_nothing_is_left_behind_when_it_is_killed(tmp_path: Path) -> None:
    """Even SIGKILL, which it cannot handle: its containers are told to stop by the kernel."""
    api = launch(["iris", "--model-dir", str(IRIS)], tmp_path / "api.log")
    try:
        api.wait_for_log("InvokeEndpoint for ")
        (master,) = api.container_pids()
        started = tree(master)
    finally:
        api.process.kill()
        api.process.wait()
    assert wait_gone(started, timeout=30) == []


def test_a_container_that_cannot_load_stops_it_with_status_3(tmp_path: Path) -> None:
    empty = tmp_path / "model"
    empty.mkdir()
    api = launch(["broken", "--model-dir", str(empty)], tmp_path / "api.log")
    assert api.process.wait(timeout=60) == 3
    log = api.log()
    assert "no *.onnx file in" in log  # the container's own reason
    assert "variant AllTraffic of endpoint broken: the container exited with status 3" in log


def test_a_port_taken_is_status_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "endpoint", "x", "--container-url", "http://127.0.0.1:1", "--port", str(port)
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize(
    ("arguments", "environ", "message"),
    [
        ((), {}, "give an endpoint NAME"),
        (("x",), {}, "give one of --model-dir, --models-dir and --container-url"),
        (("x", "--model-dir", str(IRIS), "--container-url", "http://h:1"), {}, "give one of"),
        (("x", "--model-dir", str(IRIS), "--models-dir", str(IRIS)), {}, "give one of"),
        (("x", "--models-dir", "/nonexistent"), {}, "models directory /nonexistent does not"),
        (("bad_name", "--model-dir", str(IRIS)), {}, "endpoint name 'bad_name' is not 1-63"),
        (("x", "--container-url", "localhost:8080"), {}, "invalid --container-url"),
        (("x", "--model-dir", "/nonexistent"), {}, "model directory /nonexistent does not"),
        (("x", "--model-dir", str(IRIS)), {"SERVING_ENDPOINT_PORT": "x"}, "SERVING_ENDPOINT_PORT"),
        (
            ("x", "--model-dir", str(IRIS), "--verify-signature"),
            {},
            "--verify-signature needs an access key id and a secret access key",
        ),
        (("--config", "/nonexistent.toml"), {}, "cannot read /nonexistent.toml"),
    ],
)
def test_invalid_settings_are_status_2(
    arguments: tuple[str, ...], environ: dict[str, str], message: str
) -> None:
    result = run_cli("endpoint", *arguments, environ=environ)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_help_lists_every_variable() -> None:
    result = run_cli("endpoint", "--help")
    assert result.returncode == 0
    assert "SERVING_ENDPOINT_MAX_PAYLOAD_MB" in result.stdout
    assert "--verify-signature" in result.stdout
