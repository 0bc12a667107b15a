"""The CPU image, built and run with podman as SageMaker runs it: ``IMAGE serve``, the model
mounted read-only at /opt/ml/model, then SIGTERM. CI's own step (``docker/ci/test-image.sh``,
which sets podman up and makes the stand-in base image); not part of the main suite.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import requests

from tests.server import free_port
from tests.test_toolkit_differential import tiny_wheel
from tests.wire import run_onnxruntime

ROOT = Path(__file__).parent.parent.parent
IMAGE = "localhost/onnx-serving:ci"
IRIS = ROOT / "examples" / "iris" / "model"
#: The machine's CA bundle (with its egress proxy's CA), lent to pip as the build secret ca.
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
#: The one folder a run may write to, in the container.
CONTAINER_TMP = "/tmp"  # noqa: S108
#: What podman itself adds to a container for a run (its /etc files, the model's mount point)
#: and the folders that hold them: `podman diff` lists them, though the server wrote nothing.
MOUNT_POINTS = {"/etc", "/opt", "/opt/ml", "/opt/ml/model", "/run", "/run/.containerenv"}
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]], np.float32)


def podman(*arguments: str, timeout: float = 60, check: bool = True) -> str:
    result = subprocess.run(
        ["podman", *arguments], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode:
        raise AssertionError(f"podman {' '.join(arguments)}: {result.stderr[-3000:]}")
    return result.stdout


def image_ids() -> set[str]:
    return set(podman("images", "--all", "--quiet", "--no-trunc").split())


@pytest.fixture(scope="session")
def image() -> Iterator[str]:
    """The CPU image, built from scratch: every one of its own steps runs (``--no-cache``);
    only the base image is reused. Whatever the build made (the image, its untagged build
    stage) is removed at the end of the session."""
    before = image_ids()
    arguments = ["build", "--pull=never", "--no-cache", "--secret", f"id=ca,src={CA_BUNDLE}"]
    arguments += ["-f", "docker/Dockerfile.cpu", "-t", IMAGE, str(ROOT)]
    try:
        result = subprocess.run(
            ["podman", *arguments],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield IMAGE
    finally:
        made = image_ids() - before
        podman("rmi", "--force", IMAGE, check=False)
        if made:
            podman("rmi", "--force", *made, check=False)


def model_copy(source: Path, destination: Path) -> Path:
    """A copy any user can read: the container may run as uid 1000."""
    shutil.copytree(source, destination)
    for path in [destination, *destination.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return destination


@pytest.fixture(scope="session")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_copy(IRIS, tmp_path_factory.mktemp("iris") / "model")


@dataclass
class Container:
    name: str
    port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def logs(self) -> str:
        """What the server wrote (podman gives the container's stderr on its own stderr)."""
        result = subprocess.run(
            ["podman", "logs", self.name], capture_output=True, text=True, timeout=30, check=False
        )
        return result.stdout + result.stderr


@contextmanager
def running(image: str, model: Path, *options: str, serves_on: int = 8080) -> Iterator[Container]:
    """``podman run -d -p PORT:SERVES_ON [options] -v MODEL:/opt/ml/model:ro IMAGE serve``,
    healthy."""
    container = Container(f"serving-test-{free_port()}", free_port())
    podman(
        "run", "-d", "--name", container.name, "-p", f"127.0.0.1:{container.port}:{serves_on}",
        *options, "-v", f"{model}:/opt/ml/model:ro", image, "serve",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(container.url("/ping"), timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            state = podman("inspect", "-f", "{{.State.Running}}", container.name).strip()
            assert state == "true", container.logs()
            assert time.monotonic() < deadline, container.logs()
            time.sleep(0.2)
        yield container
    finally:
        podman("rm", "-f", "-t", "0", container.name, check=False)


def assert_answers_like_onnxruntime(container: Container) -> None:
    body = "".join(",".join(map(str, row)) + "\n" for row in ROWS.tolist())
    response = requests.post(
        container.url("/invocations"),
        data=body,
        headers={"Content-Type": "text/csv", "Accept": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    outputs = response.json()["outputs"]
    expected = run_onnxruntime(IRIS / "model.onnx", {"features": ROWS})
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], rtol=1e-6)
    np.testing.assert_array_equal(outputs["label"], expected["label"])


def test_the_image_says_what_sagemaker_needs(image: str) -> None:
    (config,) = json.loads(podman("image", "inspect", image))
    settings = config["Config"]
    labels = settings["Labels"]
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert labels["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"
    assert settings["Entrypoint"] == ["serving"]
    assert settings["Cmd"] == ["serve"]
    assert settings.get("User", "") in ("", "0", "root")


def test_it_serves_as_sagemaker_runs_it(image: str, iris: Path) -> None:
    with running(image, iris) as container:
        assert_answers_like_onnxruntime(container)
        parameters = requests.get(container.url("/execution-parameters"), timeout=5).json()
        assert parameters["BatchStrategy"] == "MULTI_RECORD"
        assert "providers CPUExecutionProvider" in container.logs()


def test_it_serves_read_only_as_another_user(image: str, iris: Path) -> None:
    with running(image, iris, "--read-only", "--user", "1000") as container:
        assert_answers_like_onnxruntime(container)
        assert podman("exec", container.name, "id", "-u").strip() == "1000"


def test_a_run_changes_nothing_outside_tmp_and_sends_no_telemetry(image: str, iris: Path) -> None:
    """onnxruntime's telemetry is off: no device id under /root/.cache, no warning that it
    could not be kept; nothing else is written outside /tmp either."""
    with running(image, iris) as container:
        assert_answers_like_onnxruntime(container)
        changed = podman("diff", "--format", "json", container.name)
        logs = container.logs()
    changes = json.loads(changed) if changed.strip() else {}
    paths = [path for kind in changes.values() for path in kind or []]
    outside = [
        path
        for path in paths
        if not PurePosixPath(path).is_relative_to(CONTAINER_TMP) and path not in MOUNT_POINTS
    ]
    assert outside == [], changed
    lines = logs.splitlines()
    telemetry = [line for line in lines if "telemetry" in line and "configuration:" not in line]
    assert telemetry == [], logs
    # every line in the log format: onnxruntime's own (coloured) warnings are not
    assert all(
        re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[", line) for line in lines
    ), logs


def test_environment_variables_configure_it(image: str, iris: Path) -> None:
    options = ["-e", "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT=text/csv", "-e", "SAGEMAKER_BATCH=true"]
    with running(image, iris, *options) as container:
        response = requests.post(
            container.url("/invocations"),
            data=b"5.1,3.5,1.4,0.2\n",
            headers={"Content-Type": "text/csv"},
            timeout=30,
        )
        assert response.headers["Content-Type"] == "text/csv"
        assert response.text.count("\n") == 1
        parameters = requests.get(container.url("/execution-parameters"), timeout=5).json()
        assert parameters["MaxPayloadInMB"] == 100


SLOW_CODE = """
import time

def model_fn(model_dir):
    return "echo"

def transform_fn(model, body, content_type, accept):
    time.sleep(2)
    return body, content_type
"""


def test_sigterm_lets_in_flight_requests_finish(
    image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    source = tmp_path_factory.mktemp("slow-source")
    (source / "code").mkdir()
    (source / "code" / "inference.py").write_text(SLOW_CODE)
    model = model_copy(source, tmp_path_factory.mktemp("slow") / "model")
    with running(image, model, "--read-only", "--user", "1000") as container:
        answers: list[requests.Response] = []
        request = threading.Thread(
            target=lambda: answers.append(
                requests.post(
                    container.url("/invocations"),
                    data=b"still here",
                    headers={"Content-Type": "text/plain"},
                    timeout=30,
                )
            )
        )
        request.start()
        time.sleep(0.5)  # the request is in transform_fn's sleep
        started = time.monotonic()
        podman("stop", "-t", "30", container.name)
        stopped_in = time.monotonic() - started
        request.join(10)
        assert answers, "the in-flight request got no answer"
        assert answers[0].status_code == 200
        assert answers[0].content == b"still here"
        exit_code = podman("inspect", "-f", "{{.State.ExitCode}}", container.name).strip()
        assert exit_code == "0", container.logs()
        assert stopped_in < 10, f"stop took {stopped_in:.1f} s"  # not podman's SIGKILL


def test_a_missing_model_stops_the_container_with_the_reason(
    image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    empty = tmp_path_factory.mktemp("empty")
    empty.chmod(0o755)
    name = f"serving-test-{free_port()}"
    try:
        result = subprocess.run(
            ["podman", "run", "--name", name, "-v", f"{empty}:/opt/ml/model:ro", image, "serve"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
    assert result.returncode != 0
    assert "cannot load the model: no *.onnx file in /opt/ml/model" in result.stderr, result.stderr


def test_the_port_sagemaker_binds_to_is_served(image: str, iris: Path) -> None:
    with running(image, iris, "-e", "SAGEMAKER_BIND_TO_PORT=9000", serves_on=9000) as container:
        assert_answers_like_onnxruntime(container)


REQUIREMENTS_CODE = """
import tinypkg

def model_fn(model_dir):
    return None

def transform_fn(model, body, content_type, accept):
    return tinypkg.greet(body), "text/plain"
"""


def test_code_requirements_are_installed_read_only_as_another_user(
    image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """code/requirements.txt names a wheel shipped with the code: pip installs it at start,
    once, into /tmp (the root file system is read-only), with no index to ask."""
    source = tmp_path_factory.mktemp("requirements-source")
    (source / "code").mkdir()
    (source / "code" / "inference.py").write_text(REQUIREMENTS_CODE)
    (source / "code" / "requirements.txt").write_text("./wheels/tinypkg-1.0-py3-none-any.whl\n")
    tiny_wheel(source / "code" / "wheels" / "tinypkg-1.0-py3-none-any.whl")
    model = model_copy(source, tmp_path_factory.mktemp("requirements") / "model")
    options = ["--read-only", "--user", "1000", "-e", "SAGEMAKER_MODEL_SERVER_WORKERS=2"]
    with running(image, model, *options) as container:
        response = requests.post(
            container.url("/invocations"),
            data=b"container",
            headers={"Content-Type": "text/csv"},
            timeout=30,
        )
        assert (response.status_code, response.text) == (200, "hello container")
        logs = container.logs()
        assert logs.count("pip: Successfully installed tinypkg-1.0") == 1, logs


def test_requirements_that_cannot_install_stop_the_container(
    image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    source = tmp_path_factory.mktemp("bad-requirements-source")
    (source / "code").mkdir()
    (source / "code" / "inference.py").write_text(REQUIREMENTS_CODE)
    (source / "code" / "requirements.txt").write_text("./wheels/missing-1.0-py3-none-any.whl\n")
    model = model_copy(source, tmp_path_factory.mktemp("bad-requirements") / "model")
    name = f"serving-test-{free_port()}"
    try:
        result = subprocess.run(
            ["podman", "run", "--name", name, "--read-only", "--user", "1000",
             "-v", f"{model}:/opt/ml/model:ro", image, "serve"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
    assert result.returncode == 3, result.stderr
    assert "cannot install the code's requirements: pip could not install" in result.stderr


MME_CODE = """\
import json


def output_fn(prediction, accept):
    probabilities = prediction["probabilities"].tolist()
    return json.dumps({"model": "coded", "probabilities": probabilities})
"""


def test_a_multi_model_container_loads_two_models(image: str, iris: Path, tmp_path: Path) -> None:
    """SAGEMAKER_MULTI_MODEL=true, the models under /opt/ml/models, read-only, as uid 1000:
    a plain ONNX model and one with its own inference.py, loaded, invoked, unloaded."""
    models_dir = tmp_path / "models"
    model_copy(IRIS, models_dir / "plain" / "model")
    coded = model_copy(IRIS, models_dir / "coded" / "model")
    (coded / "code").mkdir(mode=0o755)
    (coded / "code" / "inference.py").write_text(MME_CODE)
    (coded / "code" / "inference.py").chmod(0o644)
    options = [
        "--read-only", "--user", "1000", "-e", "SAGEMAKER_MULTI_MODEL=true",
        "-v", f"{models_dir}:/opt/ml/models:ro",
    ]  # fmt: skip
    expected = run_onnxruntime(IRIS / "model.onnx", {"features": ROWS})
    body = json.dumps(ROWS.tolist())
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    with running(image, iris, *options) as container:
        for name in ("plain", "coded"):
            url = f"/opt/ml/models/{name}/model"
            loaded = requests.post(
                container.url("/models"), json={"model_name": name, "url": url}, timeout=60
            )
            assert loaded.status_code == 200, loaded.text + container.logs()
        listed = requests.get(container.url("/models"), timeout=5).json()["models"]
        assert sorted(model["modelName"] for model in listed) == ["coded", "plain"]
        plain = requests.post(
            container.url("/models/plain/invoke"), data=body, headers=headers, timeout=30
        )
        assert plain.status_code == 200, plain.text
        np.testing.assert_allclose(
            plain.json()["outputs"]["probabilities"], expected["probabilities"], rtol=1e-6
        )
        answer = requests.post(
            container.url("/models/coded/invoke"), data=body, headers=headers, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "coded"
        np.testing.assert_allclose(
            answer.json()["probabilities"], expected["probabilities"], rtol=1e-6
        )
        invocations = requests.post(
            container.url("/invocations"), data=body, headers=headers, timeout=30
        )
        assert invocations.status_code == 404
        for name in ("plain", "coded"):
            assert requests.delete(container.url(f"/models/{name}"), timeout=60).status_code == 200
        assert requests.get(container.url("/models"), timeout=5).json() == {"models": []}
