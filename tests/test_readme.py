"""The README's handler example works as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from werkzeug.test import Client

from handlers import Handler, HandlerConfig
from serving import Settings
from serving.app import create_app, load_model
from tests.wire import npy_bytes

README = Path(__file__).parent.parent / "README.md"


def readme_handler_class() -> type[Handler]:
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert block is not None
    namespace: dict[str, object] = {}
    exec(compile(block.group(1), str(README), "exec"), namespace)  # noqa: S102 - our README
    handler_class = namespace["Doubler"]
    assert isinstance(handler_class, type)
    assert issubclass(handler_class, Handler)
    return handler_class


def test_readme_handler(tmp_path: Path) -> None:
    (tmp_path / "factor.txt").write_text("2.5")
    handler_class = readme_handler_class()
    app = create_app(
        Settings.from_sources({}, cpus=1),
        make_handler=lambda: handler_class(HandlerConfig(model_dir=tmp_path)),
    )
    load_model(app)
    client = Client(app)
    response = client.post(
        "/invocations",
        data=npy_bytes(np.array([[1.0, 2.0]])),
        headers={"Content-Type": "application/x-npy", "Accept": "text/csv"},
    )
    assert response.status_code == 200
    assert response.data == b"2.5,5.0\n"
    assert response.headers["X-Amzn-SageMaker-Custom-Attributes"] == "handled-by=doubler"
    refused = client.post(
        "/invocations",
        data=b'{"inputs": {"a": [1]}}',
        headers={"Content-Type": "application/json"},
    )
    assert refused.status_code == 400
    assert refused.json == {"error": "send one unnamed array"}
