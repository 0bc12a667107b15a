"""The endpoint's parts without processes: SigV4 checked against botocore's own signer, the
configuration file, the settings table in docs/endpoint.md, and an InternalFailure as boto3
sees it."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from serving.endpoint import api, sigv4
from serving.endpoint.config import ConfigError, load
from serving.endpoint.connection import Connections
from serving.endpoint.containers import Variant
from serving.endpoint.service import Service
from serving.endpoint.settings import EndpointSettings, markdown_table
from serving.endpoint.targets import ModelsDir
from serving.endpoint.upstream import Container
from tests.endpoint import client, close_clients, running_endpoint

ROOT = Path(__file__).parent.parent
KEY, SECRET = "AKIDLOCALTEST", "local-secret"


def signed(
    path: str = "/endpoints/my-endpoint/invocations",
    body: bytes = b"1,2,3",
    headers: dict[str, str] | None = None,
    secret: str = SECRET,
    token: str | None = None,
) -> tuple[str, dict[str, str], bytes]:
    """A request signed by botocore: its target, headers (lower case) and body."""
    request = AWSRequest(
        method="POST",
        url=f"http://127.0.0.1:8090{path}",
        data=body,
        headers={"Content-Type": "text/csv", **(headers or {})},
    )
    SigV4Auth(Credentials(KEY, secret, token), "sagemaker", "eu-west-1").add_auth(request)
    lowered = {name.lower(): str(value) for name, value in request.headers.items()}
    lowered["host"] = "127.0.0.1:8090"
    target = request.url.removeprefix("http://127.0.0.1:8090")
    return target, lowered, body


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"body": b""},
        {"path": "/endpoints/a%20b/invocations"},  # percent-encoded: encoded again
        {"path": "/endpoints/x/invocations?b=2&a=1"},
        {"headers": {"X-Amzn-SageMaker-Custom-Attributes": "a  b,   c"}},  # runs of spaces
        {"token": "session-token"},  # X-Amz-Security-Token, signed
    ],
)
def test_botocore_signatures_are_accepted(kwargs: dict[str, Any]) -> None:
    target, headers, body = signed(**kwargs)
    sigv4.verify("POST", target, headers, body, KEY, SECRET)


def _denied(
    target: str,
    headers: dict[str, str],
    body: bytes,
    key: str = KEY,
    now: datetime | None = None,
) -> api.AccessDenied:
    with pytest.raises(api.AccessDenied) as raised:
        sigv4.verify("POST", target, headers, body, key, SECRET, now)
    return raised.value


def test_what_the_signature_covers_cannot_change() -> None:
    target, headers, body = signed()
    assert _denied(target, headers, b"1,2,4").code == "InvalidSignatureException"
    assert _denied(target.replace("my-", "an-"), headers, body).message == sigv4.MISMATCH
    changed = {**headers, "content-type": "application/json"}
    assert _denied(target, changed, body).code == "InvalidSignatureException"
    _, wrong_secret, _ = signed(secret="another")  # noqa: S106 - a dummy
    assert _denied(target, wrong_secret, body).code == "InvalidSignatureException"
    assert _denied(target, headers, body, key="AKIDOTHER").code == "UnrecognizedClientException"
    missing = {k: v for k, v in headers.items() if k != "authorization"}
    assert _denied(target, missing, body).code == "MissingAuthenticationTokenException"


def test_a_signature_older_than_15_minutes_has_expired() -> None:
    target, headers, body = signed()
    now = datetime.now(UTC)
    sigv4.verify("POST", target, headers, body, KEY, SECRET, now + timedelta(minutes=14))
    late = _denied(target, headers, body, now=now + timedelta(minutes=16))
    assert late.code == "InvalidSignatureException"
    assert late.message.startswith("Signature expired: ")


def test_verify_signature_with_the_real_client(tmp_path: Path) -> None:
    """boto3 with the right keys gets through; the wrong secret, another key and no signature
    get AWS's errors (403), as botocore's ClientError with AWS's codes."""
    from botocore import UNSIGNED

    arguments = ["x", "--container-url", "http://127.0.0.1:1", "--verify-signature"]
    arguments += ["--access-key-id", KEY, "--secret-access-key", SECRET, "--start-timeout", "30"]
    # no container answers at :1, so the endpoint would not start: front a fake ping instead
    with fake_container() as url:
        arguments[2] = url
        with running_endpoint(arguments, tmp_path / "api.log") as endpoint:
            good = client(endpoint.port)
            answer = good.invoke_endpoint(EndpointName="x", Body=b"1", ContentType="text/csv")
            assert answer["Body"].read() == b"ok"

            def code(runtime: Any) -> str:
                with pytest.raises(runtime.exceptions.ClientError) as raised:
                    runtime.invoke_endpoint(EndpointName="x", Body=b"1", ContentType="text/csv")
                assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
                return str(raised.value.response["Error"]["Code"])

            wrong = client(endpoint.port)
            wrong._request_signer._credentials = Credentials(KEY, "wrong")
            assert code(wrong) == "InvalidSignatureException"
            other = client(endpoint.port)
            other._request_signer._credentials = Credentials("AKIDOTHER", SECRET)
            assert code(other) == "UnrecognizedClientException"
            assert code(client(endpoint.port, signature_version=UNSIGNED)) == (
                "MissingAuthenticationTokenException"
            )


class _Fake(asyncio.Protocol):
    """A container that answers every request 200 ``ok``."""

    open: set[asyncio.Transport] = set()  # noqa: RUF012 - shared on purpose

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.open.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
        )


class _Loop:
    """An event loop in a thread, for servers the test runs in its own process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever)
        self.thread.start()

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class fake_container:  # noqa: N801 - used as a context manager
    def __enter__(self) -> str:
        self.loop = _Loop()
        self.server = self.loop.run(self.loop.loop.create_server(_Fake, "127.0.0.1", 0))
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        async def shut() -> None:
            self.server.close()
            for transport in list(_Fake.open):
                transport.close()
            await asyncio.sleep(0)  # the transports' close callbacks run

        self.loop.run(shut())
        self.loop.close()


def test_an_unexpected_error_is_an_internal_failure_without_details() -> None:
    """The API itself in this process, with a container whose client raises: boto3 gets
    InternalFailure (500) with a generic message; the traceback goes to the log only."""

    class Broken(Container):
        def start(self, parts: list[bytes | memoryview], timeout: float, done: Any) -> None:
            raise RuntimeError("secret detail")

    settings = EndpointSettings()
    loop = _Loop()
    try:
        config = load_text("[endpoints.e.variants.v]\ncontainer_url = 'http://127.0.0.1:1'\n")
        variant = Variant("e", config[0].variants[0], 1.0)
        variant.container = Broken("127.0.0.1", 1)
        connections = Connections(Service(settings, {"e": [variant]}).start, 1024)
        server = loop.run(loop.loop.create_server(connections.protocol, "127.0.0.1", 0))
        runtime = client(server.sockets[0].getsockname()[1], retries={"total_max_attempts": 1})
        with pytest.raises(runtime.exceptions.InternalFailure) as raised:
            runtime.invoke_endpoint(EndpointName="e", Body=b"1")
        assert raised.value.response["Error"]["Message"] == "An internal failure occurred."
        assert "secret" not in str(raised.value.response)
        close_clients()

        async def shut() -> None:
            server.close()
            connections.stop()
            await connections.all_closed.wait()

        loop.run(shut())
    finally:
        loop.close()


def load_text(text: str, tmp: Path | None = None) -> Any:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "endpoints.toml"
        path.write_text(text)
        return load(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("endpoints = 1", "expected [endpoints.NAME.variants.VARIANT] tables only"),
        ("[endpoints.e]\nx = 1", "expected its variants"),
        ("[endpoints.e.variants.v]\nweight = 1", "give one of model_dir, models_dir and"),
        ("[endpoints.e.variants.v]\nmodel_dir = 'm'\nmodels_dir = 'm'", "give one of"),
        ("[endpoints.e.variants.v]\nmodel_dir = 'm'\ncontainer_url = 'http://h:1'", "give one"),
        (
            "[endpoints.e.variants.v]\ncontainer_url = 'http://h:1'\ncontainer_models_dir = '/m'",
            "container_models_dir goes with container_url and models_dir",
        ),
        ("[endpoints.e.variants.v]\ncontainer_url = 'http://h:1'\nwieght = 1", "unknown keys"),
        ("[endpoints.e.variants.v]\ncontainer_url = 'http://h:1'\nweight = -1", "weight must"),
        ("[endpoints.e.variants.v]\ncontainer_url = 'http://h:1'\nweight = 0", "above 0"),
        ("[endpoints.e.variants.v_1]\ncontainer_url = 'http://h:1'", "variant name 'v_1'"),
        ("[endpoints.e.variants.v]\nmodel_dir = 'nowhere'", "does not exist"),
        ("[endpoints.e.variants.v]\nmodels_dir = 'm'", "models directory"),
        ("[endpoints.e.variants.v]\ncontainer_url = 'ftp://h'", "not an http:// URL"),
        (
            "[endpoints.e.variants.v]\ncontainer_url = 'http://h:1'\nenvironment = {A = 1}",
            "strings",
        ),
        ("[endpoints", "not valid TOML"),
    ],
)
def test_invalid_configuration_is_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as raised:
        load_text(text)
    assert message in str(raised.value)


def test_a_configuration_with_model_dirs_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    path = tmp_path / "endpoints.toml"
    path.write_text(
        "[endpoints.a.variants.one]\nmodel_dir = 'm'\nweight = 2.5\n"
        "environment = { SAGEMAKER_MODEL_SERVER_WORKERS = '1' }\n"
        "[endpoints.a.variants.two]\ncontainer_url = 'http://127.0.0.1:8080/'\n"
    )
    (endpoint,) = load(path)
    one, two = endpoint.variants
    assert (one.model_dir, one.weight, dict(one.environment)) == (
        tmp_path / "m",
        2.5,
        {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"},
    )
    assert (two.container_url, two.weight) == ("http://127.0.0.1:8080", 1.0)


def test_multi_model_variants_in_a_configuration(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "models")
    path = tmp_path / "endpoints.toml"
    path.write_text(
        "[endpoints.a.variants.started]\nmodels_dir = 'link'\n"
        "[endpoints.a.variants.running]\ncontainer_url = 'http://127.0.0.1:8080'\n"
        "models_dir = 'models'\ncontainer_models_dir = '/opt/ml/models/'\n"
        "[endpoints.a.variants.single]\ncontainer_url = 'http://127.0.0.1:8081'\n"
    )
    started, running, single = load(path)[0].variants
    # resolved, as the container resolves a load's url before comparing it with its own
    assert (started.models_dir, started.container_models_dir) == (
        (tmp_path / "models").resolve(),
        str((tmp_path / "models").resolve()),
    )
    assert (running.container_url, running.container_models_dir) == (
        "http://127.0.0.1:8080",
        "/opt/ml/models",
    )
    assert (started.multi_model, running.multi_model, single.multi_model) == (True, True, False)


@pytest.mark.parametrize(
    ("target_model", "relative"),
    [
        ("a", "a"),
        ("a.tar.gz", "a"),
        ("a/", "a"),
        ("dir/b.tar.gz", "dir/b"),
        ("odd.tar.gz", "odd.tar.gz"),  # a directory called so comes first
        ("link", "a"),  # the directory a link leads to: one model, one name
        ("missing.tar.gz", None),
        (".tar.gz", None),
        ("dir", "dir"),
        ("../models/a", None),
        ("/a", None),
        ("out", None),  # a link out of the models directory
        ("a\\..\\a", None),
        (".", None),
    ],
)
def test_target_models_name_directories_of_the_models_directory(
    tmp_path: Path, target_model: str, relative: str | None
) -> None:
    root = tmp_path / "models"
    for folder in ("a", "dir/b", "odd.tar.gz"):
        (root / folder).mkdir(parents=True)
    (root / "link").symlink_to(root / "a")
    (root / "out").symlink_to(tmp_path)
    target = ModelsDir(root, "/opt/ml/models").target(target_model)
    if relative is None:
        assert target is None
        return
    assert target is not None
    assert target.relative == relative
    assert target.url == f"/opt/ml/models/{relative}"
    # opaque, as SageMaker's, and the same wherever the container reads the directory
    assert len(target.name) == 32
    assert target.name == getattr(ModelsDir(root, "/elsewhere").target(relative), "name", None)


def test_docs_list_every_setting() -> None:
    assert markdown_table() in (ROOT / "docs" / "endpoint.md").read_text()


def test_model_error_messages_are_cut_to_the_service_s_2048() -> None:
    error = api.ModelError("e", "arn", 400, "x" * 5000)
    fields = error.fields()
    assert len(str(fields["OriginalMessage"])) == 2048
    assert len(error.message) == 2048
