"""Flask apps that tests/test_flask_integration.py mounts behind the server's routes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from flask import Flask, Response, abort, request

#: Routes of its own, and the server's paths too (which the server answers instead).
app = Flask(__name__)


@app.before_request
def refuse_without_key() -> None:
    """The app's own gate: it must never see the server's routes."""
    if request.headers.get("X-Key") != "secret":
        abort(401)


@app.get("/ping")
def ping() -> str:
    return "flask's ping"


@app.post("/invocations")
def invocations() -> str:
    return "flask's invocations"


@app.post("/digest")
def digest() -> dict[str, object]:
    """The body's length and SHA-256, as Flask read it."""
    data = request.get_data()
    return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@app.get("/stream")
def stream() -> Response:
    """A body of unknown length: no Content-Length."""

    def lines() -> Iterator[str]:
        for number in range(3):
            yield f"line {number}\n"

    return Response(lines(), mimetype="text/plain")


#: Not a WSGI app.
not_an_app = "flask"
