"""The HTTP side: settings, the WSGI app, the gunicorn process model and the CLI.

Knows nothing of ONNX: it negotiates media types against a codec registry and asks a handler
for work. See ``serving/README.md``.
"""

from __future__ import annotations

from .settings import Settings as Settings
from .settings import SettingsError as SettingsError
