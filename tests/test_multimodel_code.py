"""Multi-model endpoints: each model's own ``code/inference.py`` (and its helpers), its
``requirements.txt``, and ``/invocations`` in multi-model mode; real servers with two workers,
a fresh connection per call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from tests import models
from tests.test_multimodel import JSON, Client, expected, from_both_workers, mme_server

ROWS = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]

INFERENCE = """\
import json

import numpy as np

import utils


def predict_fn(data, model):
    return utils.transform(model.run(None, {"x": np.asarray(data, dtype=np.float32)})[0])


def output_fn(prediction, accept):
    return json.dumps({"model": utils.NAME, "y": prediction.tolist()})
"""

#: The same, importing its helper in the hooks, at request time.
LATE = (
    INFERENCE.replace("import utils\n", "")
    .replace("def predict_fn(data, model):\n", "def predict_fn(data, model):\n    import utils\n\n")
    .replace(
        "def output_fn(prediction, accept):\n",
        "def output_fn(prediction, accept):\n    import utils\n\n",
    )
)

#: Two helpers of one name, each model's own.
UTILS = {
    "alpha": 'NAME = "alpha"\n\ndef transform(y):\n    return y * 10\n',
    "beta": 'NAME = "beta"\n\ndef transform(y):\n    return y + 100\n',
}


def _model_with_code(root: Path, name: str, utils: str, requirements: str | None = None) -> Path:
    model_dir = root / "models" / name / "model"
    models.linear(model_dir / "model.onnx")
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(INFERENCE)
    (model_dir / "code" / "utils.py").write_text(utils)
    if requirements is not None:
        (model_dir / "code" / "requirements.txt").write_text(requirements)
    return model_dir


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("code")
    for name, utils in UTILS.items():
        _model_with_code(root, name, utils)
    late = _model_with_code(root, "late", UTILS["beta"])
    (late / "code" / "inference.py").write_text(LATE)
    _model_with_code(root, "needs-numpy", UTILS["alpha"], "# what it needs\nnumpy>=1.0\n")
    _model_with_code(root, "needs-more", UTILS["alpha"], "numpy\nno-such-package-xyz==1.0\n")
    _model_with_code(root, "needs-old", UTILS["alpha"], "numpy<1.0\n")
    models.linear(root / "models" / "plain" / "model" / "model.onnx")
    return root


@pytest.fixture(scope="module")
def client(base: Path) -> Iterator[Client]:
    with mme_server(base, base / "server.log") as running:
        yield Client(running)


def test_two_models_each_answer_with_their_own_code_in_both_workers(
    client: Client, base: Path
) -> None:
    for name in UTILS:
        loaded = client.load(name, base / "models" / name / "model")
        assert loaded.status_code == 200, loaded.text
    y = expected(base / "models" / "alpha" / "model" / "model.onnx", np.array(ROWS, np.float32))
    want = {"alpha": y * 10, "beta": y + 100}
    for name in UTILS:

        def invoke(_: int, name: str = name) -> requests.Response:
            return client.invoke(name, json.dumps(ROWS).encode())

        line = f'"POST /models/{name}/invoke HTTP/1.1" 200'
        for answer in from_both_workers(client.server, invoke, line):
            assert answer.status_code == 200, answer.text
            got = answer.json()
            assert got["model"] == name
            np.testing.assert_allclose(got["y"], want[name], rtol=1e-6)
    for name in UTILS:
        assert client("DELETE", f"/models/{name}").status_code == 200


def test_a_helper_two_folders_share_imported_at_request_time_is_refused_clearly(
    client: Client, base: Path
) -> None:
    """Which folder's utils a hook's ``import utils`` means is not known at request time."""
    for name in ("alpha", "late"):
        assert client.load(name, base / "models" / name / "model").status_code == 200
    answer = client.invoke("late", json.dumps(ROWS).encode())
    assert answer.status_code == 500
    assert answer.json()["error"].startswith(
        "predict_fn raised ImportError: utils is a module of several code folders ("
    )
    assert answer.json()["error"].endswith(
        "): import it at the top of the user module, where each folder gets its own"
    )
    assert client.invoke("alpha", json.dumps(ROWS).encode()).json()["model"] == "alpha"
    for name in ("alpha", "late"):
        assert client("DELETE", f"/models/{name}").status_code == 200


def test_requirements_already_installed_load(client: Client, base: Path) -> None:
    loaded = client.load("needs-numpy", base / "models" / "needs-numpy" / "model")
    assert loaded.status_code == 200, loaded.text
    assert client.invoke("needs-numpy", json.dumps(ROWS).encode()).json()["model"] == "alpha"
    assert client("DELETE", "/models/needs-numpy").status_code == 200


@pytest.mark.parametrize(
    ("name", "missing"),
    [("needs-more", "no-such-package-xyz==1.0"), ("needs-old", "numpy<1.0")],
)
def test_requirements_not_installed_refuse_the_load_naming_them(
    client: Client, base: Path, name: str, missing: str
) -> None:
    url = base / "models" / name / "model"
    refused = client.load(name, url)
    assert refused.status_code == 400
    message = refused.json()["error"]
    assert f"{url}/code/requirements.txt asks for what this server does not have" in message
    assert message.split("does not have: ")[1].startswith(f"{missing};")
    assert "install it in the image" in message
    assert name not in client.names()


def test_requirements_are_not_checked_when_the_image_is_trusted(base: Path) -> None:
    environ = {"SERVING_INSTALL_REQUIREMENTS": "false"}
    with mme_server(base, base / "trusted.log", **environ) as running:
        client = Client(running)
        url = base / "models" / "needs-more" / "model"
        assert client.load("needs-more", url).status_code == 200


def test_invocations_points_at_the_models_invoke_path(client: Client, base: Path) -> None:
    assert client.load("plain", base / "models" / "plain" / "model").status_code == 200
    answer = client("POST", "/invocations", data=b"[[1, 2, 3, 4]]", headers=JSON)
    assert answer.status_code == 404
    assert answer.json() == {
        "error": "this is a multi-model endpoint: invoke a model with POST "
        "/models/<model name>/invoke"
    }
    assert client("GET", "/ping").status_code == 200
    assert client("DELETE", "/models/plain").status_code == 200
