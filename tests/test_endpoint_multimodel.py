"""Multi-model variants of ``serving endpoint`` with boto3's own client: ``TargetModel`` loads
a model of the models directory on first use (once, however many ask at once), a 507 unloads
the least recently used model and the load is tried again, a restarted container gets its
models back, and a missing model is the service's ValidationError. Against real
``serving serve --multi-model`` containers, and a scripted one for what a real one does not
do on demand (a slow load, a refused load, a restart without a new process)."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.endpoint import (
    CSV,
    IRIS,
    EndpointProcess,
    FakeMultiModelContainer,
    client,
    invoke,
    no_retries,
    running_endpoint,
)

JSON_ROW = b"[[1.0, 2.0]]"


def copy_model(source: Path, target: Path) -> None:
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_file():
            (target / item.name).write_bytes(item.read_bytes())


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mme") / "models"
    for name in ("a", "sub/b", "crowd", "again"):
        copy_model(IRIS, root / name)
    (root / "outside").mkdir()
    (root / "escape").symlink_to(IRIS)
    return root


@pytest.fixture(scope="module")
def mme(models_dir: Path) -> Iterator[EndpointProcess]:
    arguments = ["mme", "--models-dir", str(models_dir)]
    with running_endpoint(arguments, models_dir.parent / "endpoint.log") as endpoint:
        yield endpoint


def container_url(endpoint: EndpointProcess) -> str:
    ports = re.findall(r"started serving serve .* on 127\.0\.0\.1:(\d+) \(pid", endpoint.log())
    return f"http://127.0.0.1:{ports[-1]}"


def target(runtime: Any, model: str, body: bytes = CSV, **fields: Any) -> Any:
    content_type = "text/csv" if body is CSV else "application/json"
    return invoke(
        runtime, EndpointName="mme", Body=body, ContentType=content_type, TargetModel=model,
        **fields,
    )  # fmt: skip


def test_target_models_load_on_first_use(mme: EndpointProcess, models_dir: Path) -> None:
    runtime = client(mme.port)
    answers = [target(runtime, model) for model in ("a.tar.gz", "a", "sub/b.tar.gz", "sub/b")]
    assert {answer["ResponseMetadata"]["HTTPStatusCode"] for answer in answers} == {200}
    assert {answer["InvokedProductionVariant"] for answer in answers} == {"AllTraffic"}
    assert len({answer["Body"] for answer in answers}) == 1
    assert json.loads(answers[0]["Body"])["outputs"]["label"] == [0]
    # the container knows them by opaque names, at the url where each model lies
    listed = requests.get(container_url(mme) + "/models", timeout=10).json()["models"]
    urls = {model["modelUrl"]: model["modelName"] for model in listed}
    assert {str(models_dir / "a"), str(models_dir / "sub" / "b")} <= set(urls)
    assert all(re.fullmatch("[0-9a-f]{32}", name) for name in urls.values())
    log = mme.log()
    assert len(re.findall(r"model a loaded as [0-9a-f]{32}\n", log)) == 1  # a.tar.gz is a
    assert len(re.findall(r"model sub/b loaded as", log)) == 1


def test_concurrent_first_uses_load_the_model_once(mme: EndpointProcess) -> None:
    runtime = client(mme.port, max_pool_connections=16)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: target(runtime, "crowd.tar.gz"), range(12)))
    assert {answer["ResponseMetadata"]["HTTPStatusCode"] for answer in answers} == {200}
    assert len(re.findall(r"model crowd loaded as", mme.log())) == 1


@pytest.mark.parametrize(
    "model",
    ["missing.tar.gz", "../models/a", "/a", "escape"],  # escape: a link out of the directory
)
def test_a_missing_target_model_is_a_validation_error(
    mme: EndpointProcess, models_dir: Path, model: str
) -> None:
    """As the service answers a TargetModel with no model.tar.gz under the ModelDataUrl
    prefix: ValidationError (400, not ModelNotReadyException), naming bucket and key."""
    runtime = no_retries(mme.port)
    loads = mme.log().count("loaded as")
    with pytest.raises(runtime.exceptions.ValidationError) as raised:
        target(runtime, model)
    assert mme.log().count("loaded as") == loads  # nothing was asked of the container
    response = raised.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["Error"]["Code"] == "ValidationError"
    assert response["Error"]["Message"] == (
        f"Failed to download model data (bucket: {models_dir.resolve()}, key: {model}). "
        "Please ensure that there is a model.tar.gz or a model directory at that key in the "
        "models directory (a key ending in .tar.gz also names the directory without it)."
    )


def test_a_folder_that_is_no_model_is_a_model_error(mme: EndpointProcess) -> None:
    runtime = client(mme.port)
    with pytest.raises(runtime.exceptions.ModelError) as raised:
        target(runtime, "outside")
    assert raised.value.response["OriginalStatusCode"] == 400
    assert "cannot be loaded" in raised.value.response["OriginalMessage"]


def test_a_multi_model_endpoint_needs_a_target_model(mme: EndpointProcess) -> None:
    runtime = client(mme.port)
    with pytest.raises(runtime.exceptions.ValidationError) as raised:
        invoke(runtime, EndpointName="mme", Body=CSV, ContentType="text/csv")
    assert re.fullmatch(
        r"Request [0-9a-f-]{36} is missing a target model header\.",
        raised.value.response["Error"]["Message"],
    )


def test_a_restarted_container_loads_its_models_again(mme: EndpointProcess) -> None:
    runtime = no_retries(mme.port)
    assert target(runtime, "again")["ResponseMetadata"]["HTTPStatusCode"] == 200
    first = mme.container_pids()[-1]
    os.kill(first, signal.SIGKILL)
    mme.wait_for_log(r"answers /ping", count=2)
    assert target(runtime, "again")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(re.findall(r"model again loaded as", mme.log())) == 2
    # the models the last container had are loaded again on their next use, not at its start
    assert target(runtime, "a")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(re.findall(r"model a loaded as", mme.log())) == 2


# -- the memory budget: 20 MiB models (tests/ballast.py) in one worker, 50 MiB for models


@pytest.fixture(scope="module")
def ballast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EndpointProcess]:
    root = tmp_path_factory.mktemp("ballast")
    for name, mib in (("a", 20), ("b", 20), ("c", 20), ("huge", 60)):
        (root / "models" / name).mkdir(parents=True)
        (root / "models" / name / "ballast.txt").write_text(str(mib))
    environ = {"SERVING_HANDLER": "tests.ballast:Ballast", "SERVING_MME_MEMORY_MB": "50"}
    arguments = ["mme", "--models-dir", str(root / "models")]
    with running_endpoint(arguments, root / "endpoint.log", environ) as endpoint:
        yield endpoint


def test_a_507_unloads_the_least_recently_used_model_and_loads_again(
    ballast: EndpointProcess,
) -> None:
    runtime = client(ballast.port)
    for model in ("a", "b", "a", "c", "b"):
        answer = target(runtime, f"{model}.tar.gz", JSON_ROW)
        assert json.loads(answer["Body"]) == {"predictions": [[2.0, 4.0]]}
    evictions = re.findall(
        r"model (\w+) unloaded \(least recently used\) to make room for (\w+)", ballast.log()
    )
    assert evictions == [("b", "c"), ("a", "b")]  # fmt: skip


def test_a_model_that_cannot_fit_is_a_model_error_with_status_507(
    ballast: EndpointProcess,
) -> None:
    runtime = client(ballast.port)
    with pytest.raises(runtime.exceptions.ModelError) as raised:
        target(runtime, "huge", JSON_ROW)
    assert raised.value.response["OriginalStatusCode"] == 507
    # it unloaded everything else trying, and the others load again when asked
    assert target(runtime, "a", JSON_ROW)["ResponseMetadata"]["HTTPStatusCode"] == 200


# -- a scripted container


def fake_endpoint(fake: FakeMultiModelContainer, tmp_path: Path, *extra: str) -> Any:
    (tmp_path / "models" / "a").mkdir(parents=True)
    (tmp_path / "models" / "b").mkdir(parents=True)
    config = tmp_path / "endpoints.toml"
    config.write_text(
        f"""
[endpoints.mme.variants.AllTraffic]
container_url = "{fake.url}"
models_dir = "models"
container_models_dir = "/opt/ml/models/"
"""
    )
    return running_endpoint(["--config", str(config), *extra], tmp_path / "endpoint.log")


def test_a_running_container_gets_urls_where_it_reads_the_models(tmp_path: Path) -> None:
    with FakeMultiModelContainer() as fake, fake_endpoint(fake, tmp_path) as endpoint:
        runtime = no_retries(endpoint.port)
        answer = target(runtime, "a.tar.gz")
        (load,) = fake.loads
        assert load["url"] == "/opt/ml/models/a"
        assert json.loads(answer["Body"]) == {"model": load["model_name"]}
        fake.restart()  # it forgot its models; the API still believes it has "a"
        assert json.loads(target(runtime, "a")["Body"]) == {"model": load["model_name"]}
        assert len(fake.loads) == 2


def test_a_slow_load_is_model_not_ready_and_goes_on(tmp_path: Path) -> None:
    with (
        FakeMultiModelContainer(load_delay=1.5) as fake,
        fake_endpoint(fake, tmp_path, "--timeout", "0.3") as endpoint,
    ):
        runtime = no_retries(endpoint.port)
        with pytest.raises(runtime.exceptions.ModelNotReadyException) as raised:
            target(runtime, "a")
        assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert "still being loaded" in raised.value.response["Error"]["Message"]
        endpoint.wait_for_log("model a loaded as")
        assert target(runtime, "a")["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert len(fake.loads) == 1


def test_a_refused_load_is_a_model_error(tmp_path: Path) -> None:
    with FakeMultiModelContainer() as fake, fake_endpoint(fake, tmp_path) as endpoint:
        fake.load_status = 500
        runtime = no_retries(endpoint.port)
        with pytest.raises(runtime.exceptions.ModelError) as raised:
            target(runtime, "b")
        assert raised.value.response["OriginalStatusCode"] == 500
        assert raised.value.response["OriginalMessage"] == '{"error": "told to fail"}'
        fake.load_status = None
        assert target(runtime, "b")["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_a_507_unloads_by_last_use(tmp_path: Path) -> None:
    """Room for two: the third unloads the one used least recently, not the first loaded."""
    with FakeMultiModelContainer(capacity=2) as fake, fake_endpoint(fake, tmp_path) as endpoint:
        (tmp_path / "models" / "c").mkdir()
        runtime = no_retries(endpoint.port)
        names = {}
        for model in ("a", "b", "a", "c"):
            answer = target(runtime, model)
            names[model] = json.loads(answer["Body"])["model"]
        assert fake.unloads == [names["b"]]
        assert fake.loaded == {names["a"], names["c"]}
