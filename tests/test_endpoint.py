"""``serving endpoint`` with boto3's own client (only ``endpoint_url`` and dummy keys are ours):
round trips equal to calling the container, the service's headers, every error as botocore's
own exception class, names and limits at and past their bounds, variants and their weights.
"""

from __future__ import annotations

import io
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.endpoint import (
    IRIS,
    EndpointProcess,
    client,
    invoke,
    no_retries,
    running_endpoint,
)
from tests.server import ServerProcess, free_port, launch, running_server, wait_until_healthy

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]], dtype=np.float32)
CSV = b"5.1,3.5,1.4,0.2\n6.3,3.3,6.0,2.5\n"


def npy(array: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("endpoint") / "container.log"
    with running_server(["--model-dir", str(IRIS)], log) as server:
        yield server


@pytest.fixture(scope="module")
def api(
    container: ServerProcess,
    failing_server: ServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EndpointProcess]:
    """Endpoints ``iris`` (variants ``blue``, weight 1, and ``green``, weight 3, on one
    container), ``canary`` (a weight-0 variant beside a weight-1 one) and ``failing``."""
    folder = tmp_path_factory.mktemp("endpoint-config")
    url = f"http://127.0.0.1:{container.port}"
    config = folder / "endpoints.toml"
    config.write_text(
        f"""
[endpoints.iris.variants.blue]
container_url = "{url}"
weight = 1
[endpoints.iris.variants.green]
container_url = "{url}"
weight = 3
[endpoints.canary.variants.main]
container_url = "{url}"
[endpoints.canary.variants.dark]
container_url = "{url}"
weight = 0
[endpoints.failing.variants.AllTraffic]
container_url = "http://127.0.0.1:{failing_server.port}"
"""
    )
    arguments = ["--config", str(config), "--max-payload-mb", str(10_000 / 1024 / 1024)]
    with running_endpoint(arguments, folder / "endpoint.log") as endpoint:
        yield endpoint


MAX_BODY = int(10_000 / 1024 / 1024 * 1024 * 1024)  # what --max-payload-mb above allows


@pytest.mark.parametrize(
    ("content_type", "accept", "body"),
    [
        ("text/csv", "text/csv", CSV),
        ("application/json", "application/json", b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'),
        ("application/x-npy", "application/json", npy(ROWS)),
        ("text/csv", None, CSV),
    ],
)
def test_round_trips_equal_the_container_s_answer(
    api: EndpointProcess,
    container: ServerProcess,
    content_type: str,
    accept: str | None,
    body: bytes,
) -> None:
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    direct = container.post("/invocations", body, headers)
    assert direct.status_code == 200
    extra = {"Accept": accept} if accept else {}
    answer = invoke(
        client(api.port), EndpointName="iris", Body=body, ContentType=content_type, **extra
    )
    assert answer["Body"] == direct.content
    assert answer["ContentType"] == direct.headers["Content-Type"]
    assert answer["InvokedProductionVariant"] in ("blue", "green")
    assert "CustomAttributes" not in answer  # the container set none
    assert answer["ResponseMetadata"]["RequestId"]
    # only the API's headers come back, not the container's own (Server, Connection...)
    assert set(answer["ResponseMetadata"]["HTTPHeaders"]) == {
        "content-type",
        "content-length",
        "date",
        "x-amzn-requestid",
        "x-amzn-invoked-production-variant",
    }


def test_custom_attributes_both_ways(api: EndpointProcess) -> None:
    attributes = "trace-id=abc-123,accept_eula=true;" + "x" * (1024 - 34)
    assert len(attributes) == 1024
    answer = invoke(
        client(api.port),
        EndpointName="iris",
        Body=CSV,
        ContentType="text/csv",
        CustomAttributes=attributes,
    )
    assert answer["CustomAttributes"] == attributes  # the container echoes them


def test_a_model_error_carries_the_container_s_status_and_message(api: EndpointProcess) -> None:
    runtime = client(api.port)
    with pytest.raises(runtime.exceptions.ModelError) as raised:
        invoke(runtime, EndpointName="iris", Body=b"1,x\n", ContentType="text/csv")
    response = raised.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 400
    assert (
        response["OriginalMessage"]
        == '{"error":"text/csv line 1: column 2: \'x\' is not a number"}'
    )
    assert response["LogStreamArn"].startswith(
        "arn:aws:logs:local:000000000000:log-group:/aws/sagemaker/Endpoints/iris:log-stream:"
    )
    message = response["Error"]["Message"]
    assert message.startswith('Received client error (400) from primary with message "{')
    assert response["LogStreamArn"] in message


def test_a_failing_model_is_a_model_error_with_status_500(api: EndpointProcess) -> None:
    runtime = client(api.port)
    with pytest.raises(runtime.exceptions.ModelError) as raised:
        invoke(runtime, EndpointName="failing", Body=b"[1, 2, 3]", ContentType="application/json")
    assert raised.value.response["OriginalStatusCode"] == 500
    assert raised.value.response["Error"]["Message"].startswith("Received server error (500)")


NAME_PATTERN = "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*$"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a" * 63, f"Endpoint {'a' * 63} of account 000000000000 not found."),
        ("a" * 64, "Member must have length less than or equal to 63"),
        ("x-y--z9", "Endpoint x-y--z9 of account 000000000000 not found."),
        ("bad_name", NAME_PATTERN),
        ("-leading", NAME_PATTERN),
        ("trailing-", NAME_PATTERN),
        ("é", NAME_PATTERN),
    ],
)
def test_endpoint_names_at_and_past_their_bounds(
    api: EndpointProcess, name: str, message: str
) -> None:
    runtime = client(api.port)
    with pytest.raises(runtime.exceptions.ValidationError) as raised:
        invoke(runtime, EndpointName=name, Body=CSV, ContentType="text/csv")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert message in raised.value.response["Error"]["Message"]


#: A Content-Type (or Accept) of exactly 1,024 characters, which the container takes too.
PADDED_CSV = "text/csv; x=" + "y" * 1012


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"ContentType": PADDED_CSV}, None),
        ({"ContentType": PADDED_CSV + "y"}, "'contentType' failed to satisfy constraint"),
        ({"Accept": PADDED_CSV}, None),
        ({"Accept": PADDED_CSV + "y"}, "'accept' failed to satisfy constraint"),
        ({"CustomAttributes": "a" * 1024}, None),
        ({"CustomAttributes": "a" * 1025}, "Value at 'customAttributes' failed to satisfy"),
        ({"CustomAttributes": "café"}, "Value at 'customAttributes' failed to satisfy"),
        ({"CustomAttributes": "caf\x7f"}, "Invalid control character '\\x7f' in header value"),
        ({"InferenceId": "i" * 64}, None),
        ({"InferenceId": "i" * 65}, "'inferenceId' failed to satisfy constraint"),
        ({"InferenceId": "tab\there"}, "'inferenceId' failed to satisfy constraint"),
        ({"TargetVariant": "v" * 64}, "'targetVariant' failed to satisfy constraint"),
        ({"TargetVariant": "blue_1"}, "'targetVariant' failed to satisfy constraint"),
        ({"TargetVariant": "purple"}, "The variant purple does not exist for endpoint iris"),
        (
            {"TargetModel": "model.tar.gz"},
            "Endpoint iris is not a multi-model endpoint and does not support target model header.",
        ),
        ({"TargetModel": "m" * 1025}, "'targetModel' failed to satisfy constraint"),
        ({"TargetContainerHostname": "c1"}, "does not use direct invocation"),
        (
            {"ContentType": "t" * 1025, "Accept": "a" * 1025},
            "2 validation errors detected: Value 'tttt",
        ),
    ],
)
def test_headers_at_and_past_their_bounds(
    api: EndpointProcess, fields: dict[str, str], problem: str | None
) -> None:
    runtime = client(api.port)
    arguments = {"EndpointName": "iris", "Body": CSV, "ContentType": "text/csv", **fields}
    if problem is None:
        answer = invoke(runtime, **arguments)
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        return
    with pytest.raises(runtime.exceptions.ValidationError) as raised:
        invoke(runtime, **arguments)
    assert problem in raised.value.response["Error"]["Message"]


def test_the_body_at_and_past_its_limit(api: EndpointProcess) -> None:
    runtime = client(api.port)
    body = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
    at_limit = body + b" " * (MAX_BODY - len(body))
    answer = invoke(runtime, EndpointName="iris", Body=at_limit, ContentType="application/json")
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(runtime.exceptions.ValidationError) as raised:
        invoke(runtime, EndpointName="iris", Body=at_limit + b" ", ContentType="application/json")
    assert raised.value.response["Error"]["Message"] == (
        "1 validation error detected: Value at 'body' failed to satisfy constraint: Member "
        f"must have length less than or equal to {MAX_BODY}"
    )
    # the connection is still good: the refused body was read past, not left in it
    assert invoke(runtime, EndpointName="iris", Body=CSV, ContentType="text/csv")


def test_traffic_follows_the_weights(api: EndpointProcess) -> None:
    runtime = client(api.port)
    counts = Counter(
        invoke(runtime, EndpointName="iris", Body=CSV, ContentType="text/csv")[
            "InvokedProductionVariant"
        ]
        for _ in range(400)
    )
    # green has 3/4 of the weight: 300 expected, 8.7 standard deviations; 4.6 of them each side
    assert 260 <= counts["green"] <= 340, counts
    assert counts["blue"] + counts["green"] == 400
    canary = Counter(
        invoke(runtime, EndpointName="canary", Body=CSV, ContentType="text/csv")[
            "InvokedProductionVariant"
        ]
        for _ in range(50)
    )
    assert canary == {"main": 50}  # weight 0 gets nothing unless targeted


@pytest.mark.parametrize(("endpoint", "variant"), [("iris", "blue"), ("canary", "dark")])
def test_target_variant_picks_the_variant(
    api: EndpointProcess, endpoint: str, variant: str
) -> None:
    runtime = client(api.port)
    for _ in range(20):
        answer = invoke(
            runtime, EndpointName=endpoint, Body=CSV, ContentType="text/csv", TargetVariant=variant
        )
        assert answer["InvokedProductionVariant"] == variant


def test_other_operations_are_unknown(api: EndpointProcess) -> None:
    runtime = client(api.port)
    with pytest.raises(runtime.exceptions.ClientError) as raised:
        runtime.invoke_endpoint_with_response_stream(
            EndpointName="iris", Body=CSV, ContentType="text/csv"
        )
    error = raised.value.response["Error"]
    assert error["Code"] == "UnknownOperationException"
    assert "InvokeEndpointWithResponseStream is not served" in error["Message"]


def test_a_container_that_dies_is_unavailable_then_recovers(tmp_path: Path) -> None:
    environ = {"SAGEMAKER_BIND_TO_PORT": str(free_port())}
    arguments = ["--model-dir", str(IRIS)]
    process, port = launch(arguments, tmp_path / "first.log", environ)
    first = ServerProcess(process, port, tmp_path / "first.log")
    try:
        wait_until_healthy(first)
        url = f"http://127.0.0.1:{port}"
        with running_endpoint(["live", "--container-url", url], tmp_path / "api.log") as api:
            runtime = no_retries(api.port)
            assert invoke(runtime, EndpointName="live", Body=CSV, ContentType="text/csv")
            assert first.stop() == 0
            with pytest.raises(runtime.exceptions.ServiceUnavailable) as raised:
                invoke(runtime, EndpointName="live", Body=CSV, ContentType="text/csv")
            assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            assert "cannot be reached" in raised.value.response["Error"]["Message"]
            with running_server(arguments, tmp_path / "second.log", environ):
                answer = invoke(runtime, EndpointName="live", Body=CSV, ContentType="text/csv")
                assert answer["InvokedProductionVariant"] == "AllTraffic"
    finally:
        first.stop()


def test_a_silent_container_is_a_model_error_with_status_0(tmp_path: Path) -> None:
    """A container that accepts and never answers: after --timeout, ModelError, status 0."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepted: list[socket.socket] = []
        stop = threading.Event()

        def serve() -> None:  # answers /ping, then nothing
            listener.settimeout(0.1)
            while not stop.is_set():
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                accepted.append(connection)
                if connection.recv(65536).startswith(b"GET /ping"):
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    connection.recv(65536)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            url = f"http://127.0.0.1:{listener.getsockname()[1]}"
            arguments = ["silent", "--container-url", url, "--timeout", "0.5"]
            with running_endpoint(arguments, tmp_path / "endpoint.log") as endpoint:
                runtime = no_retries(endpoint.port)
                with pytest.raises(runtime.exceptions.ModelError) as raised:
                    invoke(runtime, EndpointName="silent", Body=CSV, ContentType="text/csv")
        finally:
            stop.set()
            thread.join()
            for connection in accepted:
                connection.close()
    assert raised.value.response["OriginalStatusCode"] == 0
    assert "timed out while waiting for a response" in raised.value.response["Error"]["Message"]
