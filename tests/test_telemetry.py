"""onnxruntime keeps no device id and sends no telemetry unless asked to."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server import running_server

ONNXRUNTIME_CACHE = Path(".cache/Microsoft/DeveloperTools/.onnxruntime")


@pytest.mark.parametrize("telemetry", [False, True])
def test_onnxruntime_writes_nothing_to_home_unless_asked(
    tmp_path: Path, linear_model: Path, telemetry: bool
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    arguments = ["--model-dir", str(linear_model.parent)]
    environ = {"HOME": str(home)}
    if telemetry:
        environ["SERVING_ONNXRUNTIME_TELEMETRY"] = "true"
    with running_server(arguments, tmp_path / "server.log", environ) as server:
        response = server.post(
            "/invocations", b"[[1, 2, 3, 4]]", {"Content-Type": "application/json"}
        )
        assert response.status_code == 200
    assert (home / ONNXRUNTIME_CACHE / "deviceid").exists() == telemetry
