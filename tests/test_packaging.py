"""The package as a registry and a new user get it: the sdist and wheel built from the tree
(``uv build``, in an isolated environment with the declared build requirements), checked by
twine, and the wheel installed into a bare venv, without a compiler and without the C parser,
then serving a real request. Needs PyPI, as the SDK tests do."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import Parser
from importlib.metadata import version
from pathlib import Path

import pytest
from uv import find_uv_bin

from tests.server import ServerProcess, clean_environ, free_port, wait_until_healthy

ROOT = Path(__file__).parent.parent
IRIS = ROOT / "examples" / "iris" / "model"
#: uv's own TLS roots do not include this machine's CA; the system store does.
UV_ENVIRON = {**os.environ, "UV_NATIVE_TLS": "1"}


def uv(*arguments: str, **environ: str) -> None:
    subprocess.run(
        [find_uv_bin(), *arguments], check=True, env={**UV_ENVIRON, **environ}, timeout=600
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    uv("build", "-q", "--sdist", "--wheel", "--out-dir", str(out), str(ROOT))
    return out


def test_the_dev_extra_installs_no_onnxruntime() -> None:
    """``.[dev,gpu]`` must not install both flavours: only cpu and gpu name one."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra, requirements in extras.items():
        if extra not in ("cpu", "gpu"):
            assert not any(r.startswith("onnxruntime") for r in requirements), extra


def test_twine_accepts_the_sdist_and_the_wheel(dist: Path) -> None:
    built = [*dist.glob("*.tar.gz"), *dist.glob("*.whl")]
    assert len(built) == 2
    twine = Path(sys.executable).parent / "twine"
    result = subprocess.run(
        [str(twine), "check", "--strict", *map(str, built)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_metadata_says_what_a_review_asks(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "serving/py.typed" in names
    assert metadata["Author"] or metadata["Author-email"]
    assert "Typing :: Typed" in metadata.get_all("Classifier", [])
    requires = metadata.get_all("Requires-Dist", [])
    assert not any(r.startswith("gunicorn-h1c") and "extra" not in r for r in requires)
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        assert any(name.endswith("/LICENSE") for name in archive.getnames())


def test_the_wheel_installs_without_a_compiler_and_serves(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    uv("venv", "-q", "-p", sys.executable, str(venv))
    python = venv / "bin" / "python"
    onnxruntime = f"onnxruntime=={version('onnxruntime')}"
    # A compiler that always fails: anything that would need building makes the install fail.
    uv("pip", "install", "-q", "-p", str(python), str(wheel), onnxruntime, CC="false", CXX="false")
    absent = subprocess.run([str(python), "-c", "import gunicorn_h1c"], check=False)
    assert absent.returncode != 0
    port = free_port()
    command = [str(venv / "bin" / "serving"), "serve", "--model-dir", str(IRIS)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log_path = tmp_path / "server.log"
    environ = clean_environ()
    environ.pop("PYTHONPATH", None)  # only what the wheel installed
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=tmp_path
        )
    server = ServerProcess(process, port, log_path)
    try:
        wait_until_healthy(server)
        response = server.post("/invocations", b"5.1,3.5,1.4,0.2\n", {"Content-Type": "text/csv"})
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["label"] == [0]
    finally:
        assert server.stop() == 0


def test_ci_runs_the_readmes_set_up_command() -> None:
    readme = (ROOT / "README.md").read_text()
    set_up = next(line for line in readme.splitlines() if line.startswith("python3 -m venv"))
    assert set_up in (ROOT / ".ci" / "run").read_text().splitlines()
