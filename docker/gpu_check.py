"""The GPU path, checked on a machine with an NVIDIA GPU and onnxruntime-gpu installed:

    python docker/gpu_check.py            # prints one JSON report; exit status 1 on a failure

For each model (the iris example, and the benchmark's MLP and conv net) the ONNX handler is
loaded twice, with ``auto`` providers (CUDA first) and with the CPU alone; the outputs must
agree and both are timed. Then the refusal: with CUDA requested but no GPU visible
(``CUDA_VISIBLE_DEVICES=``), loading must fail with the reason unless a CPU fall-back is
allowed. Needs numpy, onnx and this repository on the path (run from its root).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import models  # noqa: E402  # benchmarks/models.py

from handlers import HandlerConfig, InvocationContext  # noqa: E402
from handlers.onnx_handler import OnnxHandler  # noqa: E402

CONTEXT = InvocationContext(content_type="application/x-npy", accept="application/x-npy")
RUNS = 50


def timed_outputs(handler: OnnxHandler, array: np.ndarray) -> tuple[dict[str, Any], float]:
    outputs = handler.predict(array, CONTEXT)  # warm-up (CUDA kernels, memory arenas)
    started = time.perf_counter()
    for _ in range(RUNS):
        outputs = handler.predict(array, CONTEXT)
    return outputs, (time.perf_counter() - started) / RUNS * 1000


def compare(name: str, model_dir: Path, array: np.ndarray) -> dict[str, Any]:
    report: dict[str, Any] = {"model": name, "batch": int(array.shape[0])}
    results = {}
    for label, providers in (("gpu", ("auto",)), ("cpu", ("CPUExecutionProvider",))):
        handler = OnnxHandler(HandlerConfig(model_dir=model_dir, providers=providers, threads=0))
        handler.load()
        report[f"{label}_providers"] = handler.session.get_providers()
        results[label], report[f"{label}_ms_per_run"] = timed_outputs(handler, array)
    report["gpu_used"] = report["gpu_providers"][0] == "CUDAExecutionProvider"
    report["max_abs_difference"] = max(
        float(np.max(np.abs(results["gpu"][k].astype(np.float64) - results["cpu"][k])))
        for k in results["cpu"]
    )
    report["agree"] = all(
        np.allclose(results["gpu"][k], results["cpu"][k], rtol=1e-3, atol=1e-4)
        for k in results["cpu"]
    )
    return report


REFUSAL = """
import sys
from pathlib import Path
from handlers import HandlerConfig
from handlers.errors import ModelLoadError
from handlers.onnx_handler import OnnxHandler
config = HandlerConfig(model_dir=Path(sys.argv[1]), providers=("CUDAExecutionProvider",),
                       allow_cpu_fallback=sys.argv[2] == "allow")
try:
    handler = OnnxHandler(config)
    handler.load()
    print("loaded on", handler.session.get_providers())
except ModelLoadError as exc:
    print("refused:", exc)
"""


def refusal(model_dir: Path, allow: bool) -> str:
    environ = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # CUDA there, but no device
    result = subprocess.run(
        [sys.executable, "-c", REFUSAL, str(model_dir), "allow" if allow else "refuse"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return (result.stdout.strip() or result.stderr.strip()[-500:]).splitlines()[-1]


def main() -> int:
    import onnxruntime as ort

    report: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "models": [],
    }
    iris = ROOT / "examples" / "iris" / "model"
    cases = [("iris", iris, np.random.default_rng(0).normal(5, 1, (256, 4)).astype(np.float32))]
    with tempfile.TemporaryDirectory() as scratch:
        for name in ("mlp", "conv"):
            model_dir = Path(scratch) / name
            models.BUILDERS[name](model_dir / "model.onnx")
            array = models.input_array(name)
            cases.append((name, model_dir, np.repeat(array, 32, axis=0)))
        for name, model_dir, array in cases:
            report["models"].append(compare(name, model_dir, array))
    report["refused_without_gpu"] = refusal(iris, allow=False)
    report["allowed_fallback_without_gpu"] = refusal(iris, allow=True)
    ok = (
        all(m["gpu_used"] and m["agree"] for m in report["models"])
        and report["refused_without_gpu"].startswith("refused:")
        and report["allowed_fallback_without_gpu"].startswith("loaded on")
    )
    report["ok"] = ok
    print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
