"""A multi-model variant's ``TargetModel`` naming a tar archive of the models directory (a
``model.tar.gz``, as on SageMaker it names one under the ``ModelDataUrl`` prefix): extracted
once, on its first use, into a directory of the endpoint's own inside the models directory,
which the container loads and which is removed when the endpoint stops; a hostile archive is
refused as a model that cannot be loaded, naming the member, and leaves nothing behind. With
boto3's own client, against a real ``serving serve --multi-model`` container and a scripted
one."""

from __future__ import annotations

import asyncio
import io
import json
import re
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import pytest
import requests

from serving.endpoint.archive import Cancelled
from serving.endpoint.extractions import Extractions
from serving.endpoint.targets import ModelsDir
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

EXTRACTED = re.compile(r"\.serving-endpoint-\d+-[0-9a-f]{8}")


def iris_archive(path: Path, mode: Literal["w:gz", "w"] = "w:gz") -> Path:
    """SageMaker's layout: the model directory's files at the archive's root."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        tar.add(IRIS / "model.onnx", "model.onnx")
    return path


def hostile_archive(path: Path, *members: tuple[str, bytes, str]) -> Path:
    """An archive of (name, type, link name) members, each file holding ``x``."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(IRIS / "model.onnx", "model.onnx")
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            info.size = 1 if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(b"x") if kind == tarfile.REGTYPE else None)
    return path


def tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archives")
    models = root / "models"
    for name in ("iris.tar.gz", "team/b.tar.gz", "crowd.tar.gz", "again.tar.gz"):
        iris_archive(models / name)
    iris_archive(models / "plain.tar", "w")
    (models / "both").mkdir()  # a directory beside the archive of the same name
    iris_archive(models / "both.tar.gz")
    (models / "garbage.tar.gz").write_bytes(b"not an archive at all")
    hostile_archive(models / "dots.tar.gz", ("../evil", tarfile.REGTYPE, ""))
    hostile_archive(models / "absolute.tar.gz", (str(root / "evil"), tarfile.REGTYPE, ""))
    hostile_archive(
        models / "link.tar.gz",
        ("out", tarfile.SYMTYPE, "../../.."),
        ("out/evil", tarfile.REGTYPE, ""),
    )
    hostile_archive(models / "device.tar.gz", ("null", tarfile.CHRTYPE, ""))
    return root


@pytest.fixture(scope="module")
def mme(root: Path) -> Iterator[EndpointProcess]:
    arguments = ["mme", "--models-dir", str(root / "models")]
    with running_endpoint(arguments, root / "endpoint.log") as endpoint:
        yield endpoint


def target(runtime: Any, model: str) -> Any:
    return invoke(runtime, EndpointName="mme", Body=CSV, ContentType="text/csv", TargetModel=model)


def container_models(endpoint: EndpointProcess) -> dict[str, str]:
    """The started container's models: url by name."""
    port = re.findall(r"started serving serve .* on 127\.0\.0\.1:(\d+) \(pid", endpoint.log())[-1]
    listed = requests.get(f"http://127.0.0.1:{port}/models", timeout=10).json()["models"]
    return {model["modelName"]: model["modelUrl"] for model in listed}


def test_an_archive_is_extracted_once_and_loaded_from_there(
    mme: EndpointProcess, root: Path
) -> None:
    runtime = client(mme.port)
    answers = [target(runtime, "iris.tar.gz") for _ in range(3)]
    assert {answer["ResponseMetadata"]["HTTPStatusCode"] for answer in answers} == {200}
    assert json.loads(answers[0]["Body"])["outputs"]["label"] == [0]
    log = mme.log()
    assert log.count("iris.tar.gz extracted to") == 1
    (name,) = re.findall(r"model iris\.tar\.gz loaded as ([0-9a-f]{32})\n", log)
    # loaded from a directory of the endpoint's own, inside the container's models root
    url = Path(container_models(mme)[name])
    assert url.parent.parent == (root / "models").resolve()
    assert EXTRACTED.fullmatch(url.parent.name)
    assert url.name == name
    assert tree(url) == {"model.onnx"}


@pytest.mark.parametrize("model", ["plain.tar", "team/b.tar.gz", "both.tar.gz"])
def test_any_tar_archive_is_a_model(mme: EndpointProcess, model: str) -> None:
    """Uncompressed, in a subdirectory, or beside a directory of the name without .tar.gz
    (the archive, which the TargetModel names exactly, wins)."""
    answer = target(client(mme.port), model)
    assert json.loads(answer["Body"])["outputs"]["label"] == [0]
    assert f"model {model} loaded as" in mme.log()


def test_concurrent_first_uses_extract_and_load_once(mme: EndpointProcess) -> None:
    runtime = client(mme.port, max_pool_connections=16)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: target(runtime, "crowd.tar.gz"), range(12)))
    assert {answer["ResponseMetadata"]["HTTPStatusCode"] for answer in answers} == {200}
    assert mme.log().count("crowd.tar.gz extracted to") == 1
    assert mme.log().count("model crowd.tar.gz loaded as") == 1


@pytest.mark.parametrize(
    ("model", "refusal"),
    [
        ("dots.tar.gz", "member '../evil' refused: a path with '..'"),
        ("absolute.tar.gz", "refused: an absolute path"),
        ("link.tar.gz", "member 'out' refused: a link to '../../..', outside the model"),
        ("device.tar.gz", "member 'null' refused: not a file, directory or link"),
        ("garbage.tar.gz", "not a tar archive"),
    ],
)
def test_a_hostile_archive_is_a_model_that_cannot_be_loaded(
    mme: EndpointProcess, root: Path, model: str, refusal: str
) -> None:
    """As the container's refusal of a model it cannot load: a ModelError with status 400
    and the reason, here the member refused; nothing of the archive is left."""
    runtime = no_retries(mme.port)
    before = tree(root)
    for _ in range(2):  # refused each time: the file may have been replaced meanwhile
        with pytest.raises(runtime.exceptions.ModelError) as raised:
            target(runtime, model)
        response = raised.value.response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
        assert response["OriginalStatusCode"] == 400
        message = json.loads(response["OriginalMessage"])["error"]
        assert message.startswith(f"model {model!r} cannot be loaded: ")
        assert refusal in message
        assert tree(root) - {"endpoint.log"} == before - {"endpoint.log"}
    assert f"model {model} loaded as" not in mme.log()  # the container was not asked


def test_the_extracted_directories_name_no_model(mme: EndpointProcess, root: Path) -> None:
    runtime = no_retries(mme.port)
    assert target(runtime, "again.tar.gz")["ResponseMetadata"]["HTTPStatusCode"] == 200
    (extracted,) = [path for path in (root / "models").iterdir() if EXTRACTED.match(path.name)]
    for model in (extracted.name, f"{extracted.name}/{next(extracted.iterdir()).name}"):
        with pytest.raises(runtime.exceptions.ValidationError) as raised:
            target(runtime, model)
        assert "Failed to download model data" in raised.value.response["Error"]["Message"]


def test_archives_name_models_apart_from_directories(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "both").mkdir(parents=True)
    (models / "dir.tar.gz").mkdir()
    for name in ("both.tar.gz", "a.tar.gz", "m.tar", "sub/c.tgz"):
        iris_archive(models / name)
    (models / "link.tar.gz").symlink_to(models / "a.tar.gz")
    directory = ModelsDir(models, "/opt/ml/models")
    root = f"/opt/ml/models/{directory.extractions.name}"
    for model, relative in [
        ("both.tar.gz", "both.tar.gz"),  # the archive named, not the directory "both"
        ("both", "both"),
        ("a.tar.gz", "a.tar.gz"),
        ("link.tar.gz", "a.tar.gz"),  # one archive, one model
        ("m.tar", "m.tar"),
        ("sub/c.tgz", "sub/c.tgz"),
    ]:
        found = directory.target(model)
        assert found is not None
        assert found.relative == relative
        if found.archive is None:
            assert found.url == f"/opt/ml/models/{relative}"
        else:
            assert found.archive == (models / relative).resolve()
            assert found.url == f"{root}/{found.name}"
    assert directory.target("dir.tar.gz") is not None  # a directory called so
    assert directory.target("a") is None  # no directory "a": the archive takes its full name
    assert getattr(directory.target("a.tar.gz"), "archive", None) is not None


# -- a scripted container that reads the models directory elsewhere (docker run -v)


def test_a_running_container_loads_the_extracted_directory_which_stop_removes(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    iris_archive(models / "a.tar.gz")
    config = tmp_path / "endpoints.toml"
    with FakeMultiModelContainer() as fake:
        config.write_text(
            f"""
[endpoints.mme.variants.AllTraffic]
container_url = "{fake.url}"
models_dir = "models"
container_models_dir = "/opt/ml/models"
"""
        )
        with running_endpoint(["--config", str(config)], tmp_path / "endpoint.log") as endpoint:
            runtime = no_retries(endpoint.port)
            answer = target(runtime, "a.tar.gz")
            (load,) = fake.loads
            assert json.loads(answer["Body"]) == {"model": load["model_name"]}
            extracted = re.fullmatch(r"/opt/ml/models/([^/]+)/([0-9a-f]{32})", load["url"])
            assert extracted is not None
            assert extracted[2] == load["model_name"]
            local = models / extracted[1] / extracted[2]
            assert tree(local) == {"model.onnx"}
            # a container that lost the model gets it loaded again, not extracted again
            fake.restart()
            assert json.loads(target(runtime, "a.tar.gz")["Body"]) == {"model": load["model_name"]}
            assert len(fake.loads) == 2
            assert endpoint.log().count("extracted to") == 1
            assert endpoint.stop() == 0
    assert tree(models) == {"a.tar.gz"}


def test_a_stop_during_an_extraction_leaves_nothing(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    big = models / "big.tar.gz"
    with tarfile.open(big, "w:gz") as tar:
        for number in range(20_000):
            tar.addfile(tarfile.TarInfo(f"part-{number}"), io.BytesIO(b""))

    async def stop_while_extracting() -> None:
        extractions = Extractions(models)
        waiting = asyncio.create_task(extractions.extracted(big, "big"))
        while not extractions.directory("big").exists():
            await asyncio.sleep(0.001)
        await extractions.close()
        with pytest.raises(Cancelled):
            await waiting
        with pytest.raises(Cancelled):  # and none starts after
            await extractions.extracted(big, "big")

    asyncio.run(stop_while_extracting())
    assert tree(models) == {"big.tar.gz"}
