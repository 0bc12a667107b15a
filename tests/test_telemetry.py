"""onnxruntime keeps no device id and sends no telemetry unless asked to.

Whether onnxruntime itself writes its telemetry files depends on the machine (CI machines
have been seen where it writes none), so the reference is onnxruntime run directly, in a
fresh process, with the same kind of empty home: with telemetry asked for, the server
leaves exactly what that process leaves; without, nothing at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import running_server


def files_under(home: Path) -> set[str]:
    return {str(path.relative_to(home)) for path in home.rglob("*") if path.is_file()}


def files_left_by_onnxruntime_directly(home: Path, model: Path) -> set[str]:
    home.mkdir()
    environ = {**os.environ, "HOME": str(home)}
    environ.pop("ORT_DISABLE_TELEMETRY", None)
    code = "import onnxruntime, sys; onnxruntime.InferenceSession(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(model)], env=environ, check=True)
    return files_under(home)


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
    expected = (
        files_left_by_onnxruntime_directly(tmp_path / "reference", linear_model)
        if telemetry
        else set()
    )
    assert files_under(home) == expected
