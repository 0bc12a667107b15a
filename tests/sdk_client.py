"""The SageMaker Python SDK's serializers and deserializers as a real client of
``/invocations``, run by the SDK's own Python (``tests/test_sdk.py`` builds one for v2,
``sagemaker<3``, and one for v3, ``sagemaker-core`` 2.x):

    SDK_PYTHON tests/sdk_client.py URL < cases.json

Each case names a serializer and a deserializer and holds the data (a JSON list) and the
numpy dtype to send it as ("list": the list itself). The request is what the SDK's
``Predictor.predict`` sends: the serializer's body and Content-Type, the deserializer's
Accept; the response body goes to the deserializer with the response's Content-Type, as the
botocore stream ``invoke_endpoint`` returns. Prints one JSON list: per case the status, the
response Content-Type and the deserialized value (records as their labels by name).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import urllib.request
from typing import Any

# Before the SDK is imported: v2 looks for AWS credentials at import (the EC2 metadata
# address), warns that it is deprecated, and logs its configuration to stdout.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
logging.getLogger("sagemaker.config").setLevel(logging.WARNING)

with contextlib.redirect_stdout(sys.stderr):  # stdout carries the results alone
    import numpy as np
    from botocore.response import StreamingBody

    try:  # v3
        from sagemaker.core import deserializers, serializers
    except ImportError:  # v2
        from sagemaker import deserializers, serializers

SERIALIZERS = {
    "csv": "CSVSerializer",
    "json": "JSONSerializer",
    "jsonlines": "JSONLinesSerializer",
    "npy": "NumpySerializer",
    "record": "RecordSerializer",
}
DESERIALIZERS = {
    "csv": "CSVDeserializer",
    "json": "JSONDeserializer",
    "jsonlines": "JSONLinesDeserializer",
    "npy": "NumpyDeserializer",
    "record": "RecordDeserializer",
}


def invoke(url: str, case: dict[str, Any]) -> dict[str, Any]:
    serializer = getattr(serializers, SERIALIZERS[case["serializer"]])()
    deserializer = getattr(deserializers, DESERIALIZERS[case["deserializer"]])()
    data = case["data"] if case["dtype"] == "list" else np.array(case["data"], case["dtype"])
    body = serializer.serialize(data)
    body = body.read() if hasattr(body, "read") else body  # RecordSerializer: a BytesIO
    body = body.encode() if isinstance(body, str) else body
    headers = {"Content-Type": serializer.CONTENT_TYPE, "Accept": ", ".join(deserializer.ACCEPT)}
    # The test's own loopback URL: S310 warns about file: and custom schemes.
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        status, content_type = response.status, response.headers["Content-Type"]
        raw = response.read()
    value = deserializer.deserialize(StreamingBody(io.BytesIO(raw), len(raw)), content_type)
    return {"status": status, "content_type": content_type, "value": jsonable(value)}


def jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    if hasattr(value, "label"):  # an aialgs.data.Record
        return {name: list(tensor_of(value.label[name]).values) for name in value.label}
    return value


def tensor_of(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value"))


if __name__ == "__main__":
    url = sys.argv[1]
    print(json.dumps([invoke(url, case) for case in json.load(sys.stdin)]))
