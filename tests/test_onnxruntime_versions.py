"""The onnxruntime each image pins (the CPU image's, the GPU image's for CUDA 12 and its CUDA 13
variant's) loads the example models, and serves up to the opset the README says it does.

Each version's CPU wheel stands in for the GPU one of the same version (the same graph loader
and operator set), installed in its own environment by uv: the suite needs PyPI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper
from uv import find_uv_bin

ROOT = Path(__file__).parent.parent
EXAMPLE_MODELS = sorted(ROOT.glob("examples/*/model/*.onnx"))
PROBE = """
import json, sys
import onnxruntime
loaded = {}
for path in sys.argv[1:]:
    try:
        onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        loaded[path] = True
    except Exception:
        loaded[path] = False
print(json.dumps(loaded))
"""


def pinned_versions() -> dict[str, str]:
    """The onnxruntime version each image installs, by image: the Dockerfiles' ARG lines,
    and the CUDA 13 variant's --build-arg in Dockerfile.gpu's comment."""
    cpu = (ROOT / "docker" / "Dockerfile.cpu").read_text()
    gpu = (ROOT / "docker" / "Dockerfile.gpu").read_text()
    return {
        "cpu": re.findall(r"^ARG ONNXRUNTIME=onnxruntime==(\S+)$", cpu, re.M)[0],
        "gpu": re.findall(r"^ARG ONNXRUNTIME=onnxruntime-gpu==(\S+)$", gpu, re.M)[0],
        "gpu-cuda13": re.findall(r"^#.*--build-arg ONNXRUNTIME=onnxruntime-gpu==(\S+)$", gpu, re.M)[
            0
        ],
    }


def readme_opsets() -> dict[str, int]:
    """The README's table: the highest ai.onnx opset, by onnxruntime version."""
    rows = re.findall(
        r"^\s*\| [^|]+ \| onnxruntime(?:-gpu)? (\S+) \| up to (\d+) \|$",
        (ROOT / "README.md").read_text(),
        re.M,
    )
    return {version: int(opset) for version, opset in rows}


def opset_model(path: Path, opset: int) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.save(model, path)
    return path


def python_with(version: str, root: Path) -> str:
    """A Python with onnxruntime ``version``: this one's, or a new environment's."""
    if version == onnxruntime.__version__:
        return sys.executable
    uv = find_uv_bin()
    venv = root / f"ort-{version}"
    environ = {**os.environ, "UV_NATIVE_TLS": "1"}  # uv's own roots lack this machine's CA
    subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True, env=environ)
    install = [uv, "pip", "install", "-q", "-p", str(venv / "bin" / "python")]
    subprocess.run([*install, f"onnxruntime=={version}"], check=True, env=environ, timeout=600)
    return str(venv / "bin" / "python")


def test_the_readme_names_every_pinned_version() -> None:
    assert set(pinned_versions().values()) <= set(readme_opsets())


@pytest.mark.parametrize("image", ["cpu", "gpu", "gpu-cuda13"])
def test_the_pinned_onnxruntime_loads_the_examples_and_its_opsets(
    image: str, tmp_path: Path
) -> None:
    version = pinned_versions()[image]
    highest = readme_opsets()[version]
    served = opset_model(tmp_path / "served.onnx", highest)
    beyond = opset_model(tmp_path / "beyond.onnx", highest + 1)
    paths = [*map(str, EXAMPLE_MODELS), str(served), str(beyond)]
    result = subprocess.run(
        [python_with(version, tmp_path), "-c", PROBE, *paths],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert EXAMPLE_MODELS
    assert all(loaded[str(path)] for path in EXAMPLE_MODELS), loaded
    assert loaded[str(served)], f"onnxruntime {version} refuses opset {highest}"
    assert not loaded[str(beyond)], f"onnxruntime {version} loads opset {highest + 1} too"
