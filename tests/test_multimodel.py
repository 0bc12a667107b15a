"""Multi-model endpoints against real servers with two workers, every call on a fresh
connection: what one worker answers holds for both."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import requests

from tests import models
from tests.server import ServerProcess, clean_environ, running_server

JSON = {"Content-Type": "application/json"}
ROW = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
MIB = 1024 * 1024

#: What each worker logs once it serves the models the registry lists.
JOINED = "worker serves the model registry"


class Client:
    """Calls on a fresh connection each (``Connection: close``): any worker may answer."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Connection": "close", **kwargs.pop("headers", {})}
        return requests.request(
            method, self.server.url(path), headers=headers, timeout=30, **kwargs
        )

    def load(self, name: str, url: Path | str) -> requests.Response:
        return self("POST", "/models", json={"model_name": name, "url": str(url)})

    def invoke(
        self, name: str, body: bytes = b"[[1, 2, 3, 4]]", **headers: str
    ) -> requests.Response:
        return self("POST", f"/models/{name}/invoke", data=body, headers={**JSON, **headers})

    def names(self) -> list[str]:
        answer = self("GET", "/models?max_results=1000").json()
        return [model["modelName"] for model in answer["models"]]


def serving_pids(server: ServerProcess, line: str) -> set[str]:
    """The pids of the workers whose access log has ``line``."""
    time.sleep(0.3)  # access lines are written out in blocks
    return set(re.findall(rf"\[(\d+)\] gunicorn\.access: .*{re.escape(line)}", server.log()))


def from_both_workers(
    server: ServerProcess, call: Callable[[int], requests.Response], line: str
) -> list[requests.Response]:
    """Answers to ``call`` from many threads, until both workers have answered some (the
    kernel hands a new connection to either, often the same one many times over)."""
    answers: list[requests.Response] = []
    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):
            answers += pool.map(call, range(40))
            if len(serving_pids(server, line)) == 2:
                return answers
    raise AssertionError(f"one worker answered all {len(answers)} requests")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$SAGEMAKER_BASE_DIR: models/ holds linear models, a broken one, links in and out."""
    root = tmp_path_factory.mktemp("base")
    for name in ("linear", "race"):
        models.linear(root / "models" / name / "model" / "model.onnx")
    (root / "models" / "broken" / "model").mkdir(parents=True)
    (root / "models" / "broken" / "model" / "model.onnx").write_bytes(b"not a model")
    models.linear(root / "outside" / "model" / "model.onnx")
    (root / "models" / "escape").symlink_to(root / "outside" / "model")
    (root / "models" / "link").symlink_to(root / "models" / "linear" / "model")
    return root


@contextmanager
def mme_server(base: Path, log: Path, *arguments: str, **environ: str) -> Iterator[ServerProcess]:
    """A multi-model server with two workers, both serving.

    ``/ping`` answers 200 as soon as one worker serves; the other may still be starting, and a
    load answered meanwhile does not wait for it: it loads the model as it starts, before it
    serves. A test that counts loads or measures memory would see that late load as its own
    (the workers' memory 40 MB up after a refused load, in one run in eight, was the second
    worker loading the two models loaded before the refusal).
    """
    environ = {"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_BASE_DIR": str(base), **environ}
    with running_server(["--workers", "2", *arguments], log, environ) as server:
        deadline = time.monotonic() + 30
        while server.log().count(JOINED) < 2:
            assert time.monotonic() < deadline, f"the workers did not start:\n{server.log()}"
            time.sleep(0.05)
        yield server


@pytest.fixture(scope="module")
def server(base: Path) -> Iterator[ServerProcess]:
    with mme_server(base, base / "server.log", "--max-payload-mb", "1") as running:
        yield running


@pytest.fixture
def client(server: ServerProcess) -> Client:
    return Client(server)


def expected(model: Path, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    outputs: list[np.ndarray] = session.run(None, {"x": rows})
    return outputs[0]


def test_ping_is_200_with_no_model_and_the_list_is_empty(client: Client) -> None:
    assert client("GET", "/ping").status_code == 200
    assert client("GET", "/models").json() == {"models": []}


def test_a_load_and_an_unload_hold_for_every_worker(client: Client, base: Path) -> None:
    url = base / "models" / "linear" / "model"
    loaded = client.load("lin", url)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["modelName"] == "lin"
    assert client("GET", "/models/lin").json()["modelUrl"] == str(url)
    npy = {"Content-Type": "application/x-npy", "Accept": "application/x-npy"}
    body = io.BytesIO()
    np.save(body, ROW)

    def invoke(_: int) -> requests.Response:
        return client("POST", "/models/lin/invoke", data=body.getvalue(), headers=npy)

    answers = from_both_workers(client.server, invoke, '"POST /models/lin/invoke HTTP/1.1" 200')
    assert {answer.status_code for answer in answers} == {200}
    for answer in answers:
        np.testing.assert_array_equal(
            np.load(io.BytesIO(answer.content)), expected(url / "model.onnx", ROW)
        )

    assert client("DELETE", "/models/lin").status_code == 200
    gone = from_both_workers(client.server, invoke, '"POST /models/lin/invoke HTTP/1.1" 404')
    assert {answer.status_code for answer in gone} == {404}
    assert gone[0].json() == {"error": "model 'lin' is not loaded"}
    assert client("GET", "/models/lin").status_code == 404
    assert client("DELETE", "/models/lin").status_code == 404
    assert client.names() == []


def test_concurrent_loads_of_one_name_load_it_once(client: Client, base: Path) -> None:
    url = base / "models" / "race" / "model"
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda _: client.load("race", url).status_code, range(8)))
    assert statuses == [200] + [409] * 7
    assert client.names() == ["race"]
    # once in each of the two workers, and no more
    assert client.server.log().count(f"loaded {url}/model.onnx") == 2
    assert client("DELETE", "/models/race").status_code == 200


CASES: list[tuple[str, dict[str, str], bytes]] = [
    ("json", JSON, b"[[1, 2, 3, 4], [5, 6, 7, 8]]"),
    ("csv", {"Content-Type": "text/csv", "Accept": "text/csv"}, b"1,2,3,4\n5,6,7,8\n"),
    ("no content type", {}, b"[[1, 2, 3, 4]]"),
    ("unsupported", {"Content-Type": "image/gif"}, b"GIF89a"),
    ("not acceptable", {**JSON, "Accept": "image/gif"}, b"[[1, 2, 3, 4]]"),
    ("bad input", JSON, b"[[1, 2, 3]]"),
    ("malformed", JSON, b"[[1, 2,"),
    ("attributes", {**JSON, "X-Amzn-SageMaker-Custom-Attributes": "a=1"}, b"[[1, 2, 3, 4]]"),
    ("too large", JSON, b" " * (1024 * 1024 + 1)),
    ("target model", {**JSON, "X-Amzn-SageMaker-Target-Model": "lin.tar.gz"}, b"[[1,2,3,4]]"),
]


@pytest.mark.parametrize(
    ("headers", "body"), [case[1:] for case in CASES], ids=[c[0] for c in CASES]
)
def test_invoke_answers_as_invocations_does(
    client: Client, base: Path, linear_server: ServerProcess, headers: dict[str, str], body: bytes
) -> None:
    """Same status, body and headers as a single-model server of the same model."""
    if "same" not in client.names():
        assert client.load("same", base / "models" / "linear" / "model").status_code == 200
    multi = client("POST", "/models/same/invoke", data=body, headers=headers)
    single = requests.post(
        linear_server.url("/invocations"), data=body, headers=headers, timeout=30
    )
    assert (multi.status_code, multi.content) == (single.status_code, single.content)
    for header in ("Content-Type", "X-Amzn-SageMaker-Custom-Attributes"):
        assert multi.headers.get(header) == single.headers.get(header)


@pytest.mark.parametrize(
    ("request_body", "status", "message"),
    [
        ({"model_name": "../x", "url": "models/linear/model"}, 400, "invalid model_name"),
        ({"model_name": "a/b", "url": "models/linear/model"}, 400, "invalid model_name"),
        ({"model_name": "..", "url": "models/linear/model"}, 400, "invalid model_name"),
        ({"model_name": "", "url": "models/linear/model"}, 400, "invalid model_name"),
        ({"model_name": 7, "url": "models/linear/model"}, 400, 'a load takes {"model_name"'),
        ({"url": "models/linear/model"}, 400, 'a load takes {"model_name"'),
        ({"model_name": "x", "url": "relative/model"}, 400, "is not an absolute path"),
        ({"model_name": "x", "url": "outside/model"}, 400, "is not inside the models directory"),
        ({"model_name": "x", "url": "models/../outside/model"}, 400, "is not inside the models"),
        ({"model_name": "x", "url": "models/escape"}, 400, "is not inside the models directory"),
        ({"model_name": "x", "url": "models"}, 400, "is not inside the models directory"),
        ({"model_name": "x", "url": "models/missing/model"}, 404, "no such model directory"),
        ({"model_name": "x", "url": "models/broken/model"}, 400, "onnxruntime cannot load"),
        ([1, 2], 400, "must be a JSON object"),
    ],
)
def test_bad_loads_are_refused_and_leave_nothing(
    client: Client, base: Path, request_body: Any, status: int, message: str
) -> None:
    if isinstance(request_body, dict) and request_body.get("url", "/").startswith(("m", "o")):
        request_body = {**request_body, "url": str(base / request_body["url"])}
    answer = client("POST", "/models", json=request_body)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert "x" not in client.names()


def test_a_load_that_is_not_json_is_refused(client: Client) -> None:
    answer = client("POST", "/models", data=b"{nope", headers=JSON)
    assert answer.status_code == 400
    assert "not JSON" in answer.json()["error"]


def test_a_model_that_failed_to_load_leaves_its_name_free(client: Client, base: Path) -> None:
    failed = client.load("phoenix", base / "models" / "broken" / "model")
    assert failed.status_code == 400
    assert "model 'phoenix' cannot be loaded" in failed.json()["error"]
    assert client.load("phoenix", base / "models" / "link").status_code == 200  # a link inside
    assert client.invoke("phoenix").status_code == 200
    assert client("DELETE", "/models/phoenix").status_code == 200


def test_list_pages(client: Client, base: Path) -> None:
    names = [f"page-{index}" for index in range(5)]
    for name in names:
        assert client.load(name, base / "models" / "linear" / "model").status_code == 200
    seen, token, pages = [], "", 0
    while True:
        query = f"?max_results=2&next_page_token={token}" if token else "?max_results=2"
        answer = client("GET", f"/models{query}").json()
        seen += [model["modelName"] for model in answer["models"]]
        pages += 1
        if "nextPageToken" not in answer:
            break
        token = answer["nextPageToken"]
    assert [name for name in seen if name.startswith("page-")] == names
    assert client("GET", "/models?max_results=0").status_code == 400
    assert client("GET", "/models?next_page_token=%%%").status_code == 400
    for name in names:
        assert client("DELETE", f"/models/{name}").status_code == 200


def worker_memory(server: ServerProcess) -> int:
    """The workers' resident memory, together."""
    total = 0
    for pid in server.worker_pids():
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        total += pages * 4096
    return total


# -- the memory budget, with models of known size (tests/ballast.py)


@pytest.fixture(scope="module")
def ballast_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ballast")
    for name in ("a", "b", "c", "flaky"):
        (root / "models" / name).mkdir(parents=True)
        (root / "models" / name / "ballast.txt").write_text("20")
    return root


def ballast_server(base: Path, evict: str) -> Any:
    log = base / f"{evict}.log"
    return mme_server(
        base, log, "--handler", "tests.ballast:Ballast", "--mme-memory-mb", "100",
        "--mme-evict", evict,
    )  # fmt: skip


def test_a_load_past_the_budget_is_507_and_leaves_nothing(ballast_base: Path) -> None:
    """20 MB models in two workers take 40 MB each: two fit in 100 MB, a third does not."""
    with ballast_server(ballast_base, "none") as running:
        client = Client(running)
        models_dir = ballast_base / "models"
        assert client.load("a", models_dir / "a").status_code == 200
        described = client("GET", "/models/a").json()
        assert 20 <= described["footprintMB"] < 24
        assert client.load("b", models_dir / "b").status_code == 200
        before = worker_memory(running)
        refused = client.load("c", models_dir / "c")
        assert refused.status_code == 507
        assert "model 'c' needs" in refused.json()["error"]
        assert client.names() == ["a", "b"]
        # The worker that loaded c frees it before it answers (gc, malloc_trim); the other
        # never loads it. Both workers together grew 0.15 MB at most over 30 runs; 5 MB is a
        # quarter of the model, and 30 times that.
        grown = worker_memory(running) - before
        assert grown < 5 * MIB, f"{grown / MIB:.1f} MB still held"
        assert client("DELETE", "/models/a").status_code == 200
        assert client.load("c", models_dir / "c").status_code == 200
        assert re.search(
            r"model c loaded from \S+ in [\d.]+ s: 2\d\.\d MB per worker", running.log()
        )


def test_lru_evicts_the_least_recently_invoked_model(ballast_base: Path) -> None:
    with ballast_server(ballast_base, "lru") as running:
        client = Client(running)
        models_dir = ballast_base / "models"
        assert client.load("a", models_dir / "a").status_code == 200
        assert client.load("b", models_dir / "b").status_code == 200
        assert client.invoke("a").status_code == 200
        time.sleep(1.5)  # workers report their models' last use every second
        assert client.load("c", models_dir / "c").status_code == 200
        assert client.names() == ["a", "c"]
        assert client.invoke("b").status_code == 404
        assert "model b evicted (least recently used) to make room for c" in running.log()


def test_a_load_that_fails_in_one_worker_is_undone_in_all(ballast_base: Path) -> None:
    with ballast_server(ballast_base, "none") as running:
        client = Client(running)
        flaky = ballast_base / "models" / "flaky"
        (flaky / "fail-pids.txt").write_text(str(running.worker_pids()[0]))
        try:
            for _ in range(4):  # whichever worker answers the load
                answer = client.load("flaky", flaky)
                assert answer.status_code in (400, 500), answer.text
                assert "is told to fail" in answer.json()["error"]
                assert client.names() == []
        finally:
            (flaky / "fail-pids.txt").unlink()
        assert client.load("flaky", flaky).status_code == 200


def test_settings_turn_it_on(base: Path, tmp_path: Path) -> None:
    """Without SAGEMAKER_MULTI_MODEL the /models routes do not exist."""
    shutil.copytree(base / "models" / "linear" / "model", tmp_path / "model")
    with running_server(["--model-dir", str(tmp_path / "model")], tmp_path / "log") as single:
        assert requests.get(single.url("/models"), timeout=10).status_code == 404


def test_a_missing_models_directory_stops_the_server_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "serving", "serve", "--multi-model"],
        capture_output=True,
        text=True,
        env=clean_environ({"SAGEMAKER_BASE_DIR": str(tmp_path)}),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"models directory {tmp_path}/models does not exist" in result.stderr
