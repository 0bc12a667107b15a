"""The AWS inference toolkit (sagemaker-inference 1.10.1 on multi-model-server 1.1.11), driven
in-process as MMS's Python worker drives it, run by the toolkit's own Python
(``tests/test_toolkit_differential.py`` builds that environment with uv):

    TOOLKIT_PYTHON tests/toolkit_driver.py UV < models.json

Per model: ``SAGEMAKER_PROGRAM`` and the rest of its environment set, ``requirements.txt``
installed into the environment (the toolkit's ``pip install -r``, here through uv: uv's
environments have no pip), the code folder put on the path (MMS's ``PYTHONPATH``), and the
model loaded by MMS's own loader with the toolkit's handler service, which calls
``initialize`` (``model_fn``) at load. Per request: the batch MMS's frontend sends (request
headers as the client sent them, the body with its bare media type), ``Service.predict``, and
the binary answer it writes decoded as the frontend turns it into HTTP: that status, a
Content-Type only when the worker set one, its other headers, the body. Prints one JSON list
of answers per model.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from mms.model_loader import ModelLoaderFactory

HANDLER_SERVICE = "sagemaker_inference.default_handler_service"


def load(model: dict[str, Any], uv: str) -> Any:
    model_dir = model["model_dir"]
    code_dir = Path(model_dir) / "code"
    for name, value in model["environ"].items():
        os.environ[name] = value
    requirements = code_dir / "requirements.txt"
    if requirements.is_file():
        install = [uv, "pip", "install", "-q", "-p", sys.executable, "-r", str(requirements)]
        subprocess.run(install, check=True, cwd=code_dir, stdout=sys.stderr)
    sys.path.insert(0, str(code_dir))
    loader = ModelLoaderFactory.get_model_loader(model_dir)
    return loader.load("model", model_dir, HANDLER_SERVICE, None, 1)


def forget(model: dict[str, Any]) -> None:
    """The model's modules out of ``sys.modules`` and its folder off the path: one process
    serves every model of the run, as if each had a container of its own."""
    code_dir = str(Path(model["model_dir"]) / "code")
    sys.path.remove(code_dir)
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "") or "").startswith(code_dir):
            del sys.modules[name]
    for name in model["environ"]:
        os.environ.pop(name, None)


def invoke(service: Any, request: dict[str, Any], number: int) -> dict[str, Any]:
    headers = request["headers"]
    media_type = headers.get("Content-Type", "").split(";")[0].strip()
    batch = [
        {
            "requestId": f"request-{number}".encode(),
            "headers": [{"name": k.encode(), "value": v.encode()} for k, v in headers.items()],
            "parameters": [
                {
                    "name": "body",
                    "contentType": media_type,
                    "value": base64.b64decode(request["body"]),
                }
            ],
        }
    ]
    return decode(bytes(service.predict(batch)))


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def int(self) -> int:
        (value,) = struct.unpack_from("!i", self.data, self.at)
        self.at += 4
        return int(value)

    def bytes(self) -> bytes:
        length = self.int()
        value = self.data[self.at : self.at + length]
        self.at += length
        return value


def decode(message: bytes) -> dict[str, Any]:
    """One request's answer from MMS's ``create_predict_response`` message."""
    reader = Reader(message)
    reader.int()  # the batch's code
    reader.bytes()  # its message
    reader.bytes()  # the request id
    content_type = reader.bytes().decode()
    status = reader.int()
    reader.bytes()  # the reason phrase
    headers = {}
    for _ in range(reader.int()):
        name = reader.bytes().decode()
        headers[name] = reader.bytes().decode()
    body = reader.bytes()
    # The frontend sets the worker's content type, then its headers over it (the toolkit's
    # own ``content-type`` entry among them).
    merged = {"Content-Type": content_type} if content_type else {}
    for name, value in headers.items():
        merged = {k: v for k, v in merged.items() if k.lower() != name.lower()}
        merged[name] = value
    return {"status": status, "headers": merged, "body": base64.b64encode(body).decode()}


def main() -> None:
    uv = sys.argv[1]
    answers = []
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the answers alone
        for model in json.load(sys.stdin):
            service = load(model, uv)
            answers.append([invoke(service, r, n) for n, r in enumerate(model["requests"])])
            forget(model)
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
