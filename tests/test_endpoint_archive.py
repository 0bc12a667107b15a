"""A model.tar.gz as ``--model-dir`` (or a variant's ``model_dir``), as SageMaker's
``ModelDataUrl`` names one: extracted into a temporary directory that is served and removed
when the endpoint stops; an archive that would write outside it, or holds what a model does
not (devices, FIFOs), is refused with the member named."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest

from serving.endpoint import archive as archive_module
from serving.endpoint.archive import ArchiveError, Cancelled, extract
from serving.endpoint.config import ConfigError, load
from tests.endpoint import (
    CSV,
    IRIS,
    READY,
    START_TIMEOUT,
    invoke,
    launch,
    no_retries,
    running_endpoint,
    wait_gone,
)
from tests.test_process import run_cli


def member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "", mode: int = 0
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data)
    info.linkname = link
    info.mode = mode or (0o755 if kind == tarfile.DIRTYPE else 0o644)
    return info, data


def archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def iris_archive(path: Path) -> Path:
    """SageMaker's layout: the model directory's files at the archive's root."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(IRIS / "model.onnx", "model.onnx")
    return path


@pytest.fixture(params=["data filter", "no data filter"])
def python(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of extracting: with tarfile's ``data`` filter, and as on a Python without
    it (before 3.11.4), where the modes are restricted after each member."""
    if request.param == "no data filter":
        monkeypatch.setattr(archive_module, "_DATA_FILTER", None)
    return str(request.param)


def test_an_archive_is_extracted_with_its_links_inside(tmp_path: Path, python: str) -> None:
    path = archive(
        tmp_path / "model.tar.gz",
        [
            member("model.onnx", data=b"onnx"),
            member("code", tarfile.DIRTYPE),
            member("code/inference.py", data=b"def model_fn(d): ..."),
            member("code/latest.onnx", tarfile.SYMTYPE, link="../model.onnx"),
            member("copy.onnx", tarfile.LNKTYPE, link="model.onnx"),
            member("./code/./extra.txt", data=b"x"),
            member("setuid", data=b"#!/bin/sh\n", mode=0o4777),
        ],
    )
    extract(path, tmp_path / "out")
    out = tmp_path / "out"
    assert (out / "model.onnx").read_bytes() == b"onnx"
    assert (out / "code" / "latest.onnx").read_bytes() == b"onnx"
    assert (out / "code" / "latest.onnx").is_symlink()
    assert (out / "copy.onnx").read_bytes() == b"onnx"
    assert (out / "code" / "extra.txt").read_bytes() == b"x"
    assert (out / "setuid").stat().st_mode & 0o7777 == 0o755  # no set-uid, no other's write


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([member("../evil", data=b"x")], "member '../evil' refused: a path with '..'"),
        ([member("a/../../evil", data=b"x")], "member 'a/../../evil' refused: a path with '..'"),
        ([member("/tmp/evil", data=b"x")], "member '/tmp/evil' refused: an absolute path"),
        (
            [member("link", tarfile.SYMTYPE, link="../outside")],
            "member 'link' refused: a link to '../outside', outside the model directory",
        ),
        (
            [member("link", tarfile.SYMTYPE, link="/etc/passwd")],
            "member 'link' refused: a link to the absolute path '/etc/passwd'",
        ),
        (
            [member("hard", tarfile.LNKTYPE, link="../outside")],
            "member 'hard' refused: a link to '../outside', outside the model directory",
        ),
        (
            # each link inside on its own; through the first, the second leads out
            [
                member("here", tarfile.SYMTYPE, link="."),
                member("d", tarfile.DIRTYPE),
                member("d/up", tarfile.SYMTYPE, link="../here/.."),
            ],
            "member 'd/up' refused: a link to '../here/..', outside the model directory",
        ),
        (
            [member("here", tarfile.SYMTYPE, link="."), member("here", data=b"x")],
            "member 'here' refused: it would replace the model directory",
        ),
        (
            [member("dev", tarfile.CHRTYPE)],
            "member 'dev' refused: not a file, directory or link (a device or FIFO)",
        ),
        (
            [member("pipe", tarfile.FIFOTYPE)],
            "member 'pipe' refused: not a file, directory or link (a device or FIFO)",
        ),
    ],
)
def test_a_hostile_archive_is_refused(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], message: str, python: str
) -> None:
    path = archive(tmp_path / "model.tar.gz", [member("model.onnx", data=b"onnx"), *members])
    destination = tmp_path / "jail" / "model"
    with pytest.raises(ArchiveError) as raised:
        extract(path, destination)
    assert str(raised.value) == f"{path}: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jail", "model.tar.gz"]
    assert [p.name for p in (tmp_path / "jail").iterdir()] == ["model"]


def test_a_damaged_archive_is_refused(tmp_path: Path) -> None:
    whole = iris_archive(tmp_path / "whole.tar.gz").read_bytes()
    damaged = tmp_path / "model.tar.gz"
    damaged.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ArchiveError, match="cannot be extracted"):
        extract(damaged, tmp_path / "out")


def test_an_extraction_stops_when_asked(tmp_path: Path) -> None:
    with pytest.raises(Cancelled):
        extract(iris_archive(tmp_path / "model.tar.gz"), tmp_path / "out", lambda: True)


def test_a_configuration_names_an_archive(tmp_path: Path) -> None:
    iris_archive(tmp_path / "model.tar.gz")
    (tmp_path / "notes.txt").write_text("not an archive")
    path = tmp_path / "endpoints.toml"
    path.write_text("[endpoints.a.variants.one]\nmodel_dir = 'model.tar.gz'\n")
    (variant,) = load(path)[0].variants
    assert (variant.model_dir, variant.model_archive) == (None, tmp_path / "model.tar.gz")
    path.write_text("[endpoints.a.variants.one]\nmodel_dir = 'notes.txt'\n")
    with pytest.raises(ConfigError, match=r"notes\.txt is neither a model directory nor a"):
        load(path)


def test_a_model_tar_gz_is_served_then_removed(tmp_path: Path) -> None:
    path = iris_archive(tmp_path / "model.tar.gz")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    arguments = ["iris", "--model-dir", str(path)]
    with running_endpoint(arguments, tmp_path / "api.log", {"TMPDIR": str(scratch)}) as api:
        answer = invoke(no_retries(api.port), EndpointName="iris", Body=CSV, ContentType="text/csv")
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        (extracted,) = re.findall(rf"{re.escape(str(path))} extracted to (\S+) ", api.log())
        assert (Path(extracted) / "model.onnx").read_bytes() == (IRIS / "model.onnx").read_bytes()
        assert Path(extracted).is_relative_to(scratch)
        assert f"--model-dir {extracted} on 127.0.0.1" in api.log()
    assert api.process.returncode == 0
    assert list(scratch.iterdir()) == []


def test_what_a_killed_run_extracted_is_removed_at_the_next_start(tmp_path: Path) -> None:
    """SIGKILL cannot be handled: the directory stays until the next start finds that no
    running command holds it."""
    path = iris_archive(tmp_path / "model.tar.gz")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    arguments, environ = ["iris", "--model-dir", str(path)], {"TMPDIR": str(scratch)}
    killed = launch(arguments, tmp_path / "killed.log", environ)
    try:
        killed.wait_for_log(READY, timeout=START_TIMEOUT)
        containers = killed.container_pids()
    finally:
        killed.process.kill()
        killed.process.wait()
    assert wait_gone(containers, timeout=30) == []
    (left,) = scratch.iterdir()
    assert (left / "iris.AllTraffic" / "model.onnx").exists()
    with running_endpoint(arguments, tmp_path / "api.log", environ) as api:
        assert f"removed {left}, left behind by a run that was killed" in api.log()
        assert left not in list(scratch.iterdir())
    assert list(scratch.iterdir()) == []


def test_a_hostile_model_tar_gz_stops_it_with_status_2(tmp_path: Path) -> None:
    path = archive(tmp_path / "model.tar.gz", [member("../../evil", data=b"x")])
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    api = launch(["x", "--model-dir", str(path)], tmp_path / "api.log", {"TMPDIR": str(scratch)})
    assert api.process.wait(timeout=60) == 2
    assert f"{path}: member '../../evil' refused: a path with '..'" in api.log()
    assert "started serving serve" not in api.log()
    assert list(scratch.iterdir()) == []
    assert not (tmp_path.parent / "evil").exists()


def test_a_file_that_is_no_archive_is_status_2(tmp_path: Path) -> None:
    result = run_cli("endpoint", "x", "--model-dir", str(IRIS / "model.onnx"))
    assert result.returncode == 2
    assert "model.onnx is neither a model directory nor a model.tar.gz" in result.stderr
