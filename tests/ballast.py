"""A handler whose model is a known amount of memory, for multi-model budget tests.

The model directory's ``ballast.txt`` says how many MiB to hold; ``fail-pids.txt``, if there,
lists worker pids whose load fails. It answers every request with its input doubled.
"""

from __future__ import annotations

import os

import numpy as np

from handlers import Handler, Inputs, InvocationContext, Outputs
from handlers.errors import ModelLoadError


class Ballast(Handler):
    def load(self) -> None:
        model_dir = self.config.model_dir
        failing = model_dir / "fail-pids.txt"
        if failing.is_file() and str(os.getpid()) in failing.read_text().split():
            raise ModelLoadError(f"this worker ({os.getpid()}) is told to fail")
        mib = float((model_dir / "ballast.txt").read_text())
        self.ballast = np.ones(int(mib * 1024 * 1024) // 8)  # pages touched: resident

    def predict(self, inputs: Inputs, context: InvocationContext) -> Outputs:
        if isinstance(inputs, dict):
            inputs = next(iter(inputs.values()))
        return {"doubled": np.asarray(inputs) * 2}
