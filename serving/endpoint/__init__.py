"""The runtime API, locally: ``serving endpoint`` serves SageMaker's ``InvokeEndpoint``
(sagemaker-runtime 2017-05-13) in front of containers, so that boto3 code written for a real
endpoint runs unchanged with ``endpoint_url`` pointed here.

A separate process from the server: it speaks HTTP to containers (started as ``serving serve``
child processes, or already running) and imports nothing of the worker's request path or of
``handlers/``. See ``README.md`` in this folder and ``docs/endpoint.md``.
"""

from __future__ import annotations

from .settings import EndpointSettings as EndpointSettings
