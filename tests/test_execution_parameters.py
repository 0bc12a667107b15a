"""GET /execution-parameters and batch mode: what batch transform is told, and needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from werkzeug.test import Client

from serving import Settings
from serving.app import create_app
from tests.server import ServerProcess

IRIS = Path(__file__).parent.parent / "examples" / "iris" / "model"


def parameters(environ: dict[str, str], cpus: int = 4) -> object:
    settings = Settings.from_sources(environ, {"model_dir": str(IRIS)}, cpus=cpus)
    app = create_app(settings)
    response = Client(app).get("/execution-parameters")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    return response.json


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, {"MaxConcurrentTransforms": 4, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}),
        (
            {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SERVING_INFERENCE_CONCURRENCY": "3"},
            {"MaxConcurrentTransforms": 6, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6},
        ),
        (
            {
                "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "9",
                "SAGEMAKER_BATCH_STRATEGY": "single_record",
                "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20",
            },
            {"MaxConcurrentTransforms": 9, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 20},
        ),
        (
            {"SAGEMAKER_BATCH": "true"},
            {"MaxConcurrentTransforms": 4, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 100},
        ),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0"}, {"MaxPayloadInMB": 0}),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0.5"}, {"MaxPayloadInMB": 1}),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "250"}, {"MaxPayloadInMB": 100}),
    ],
)
def test_parameters_follow_the_configuration(
    environ: dict[str, str], expected: dict[str, object]
) -> None:
    answer = parameters(environ)
    assert isinstance(answer, dict)
    assert {key: answer[key] for key in expected} == expected


def test_batch_mode_raises_the_limits_unless_they_are_set() -> None:
    batch = Settings.from_sources({"SAGEMAKER_BATCH": "true"}, cpus=1)
    assert (batch.max_payload_bytes, batch.timeout) == (100 * 1024 * 1024, 3600)
    chosen = Settings.from_sources(
        {"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "50"}, {"timeout": "900"}, cpus=1
    )
    assert (chosen.max_payload_mb, chosen.timeout) == (50, 900)
    real_time = Settings.from_sources({}, cpus=1)
    assert (real_time.max_payload_mb, real_time.timeout) == (6, 60)


def test_an_unknown_strategy_is_refused() -> None:
    from serving.settings import SettingsError

    with pytest.raises(SettingsError, match="SAGEMAKER_BATCH_STRATEGY='SOMETIMES'"):
        Settings.from_sources({"SAGEMAKER_BATCH_STRATEGY": "SOMETIMES"}, cpus=1)


def test_the_real_server_answers(linear_server: ServerProcess) -> None:
    response = linear_server.get("/execution-parameters")
    assert response.json() == {
        "MaxConcurrentTransforms": 1,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 1,
    }
