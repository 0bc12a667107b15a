"""The settings table: precedence, validation, automatic sizing, and the README in step."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from serving.cpus import available_cpus, cgroup_cpu_quota
from serving.settings import SETTINGS, Settings, SettingsError, markdown_table
from tests.update_readme import updated

ROOT = Path(__file__).parent.parent


def test_defaults() -> None:
    settings = Settings.from_sources({}, cpus=4)
    assert settings.port == 8080
    assert settings.model_dir == Path("/opt/ml/model")
    assert settings.timeout == 60
    assert settings.default_accept == "application/json"
    assert settings.max_payload_bytes == 6 * 1024 * 1024
    assert settings.log_level == logging.INFO
    assert settings.log_pings is False
    assert (settings.workers, settings.inference_threads) == (4, 1)


def test_precedence_default_then_environment_then_flag() -> None:
    assert Settings.from_sources({}, cpus=1).port == 8080
    assert Settings.from_sources({"SAGEMAKER_BIND_TO_PORT": "9001"}, cpus=1).port == 9001
    both = Settings.from_sources({"SAGEMAKER_BIND_TO_PORT": "9001"}, {"port": "9002"}, cpus=1)
    assert both.port == 9002


def test_base_dir_variable_names_the_model_folder() -> None:
    from_env = Settings.from_sources({"SAGEMAKER_BASE_DIR": "/srv/ml/"}, cpus=1)
    assert from_env.model_dir == Path("/srv/ml/model")
    from_flag = Settings.from_sources(
        {"SAGEMAKER_BASE_DIR": "/srv/ml"}, {"model_dir": "./here"}, cpus=1
    )
    assert from_flag.model_dir == Path("./here")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"SAGEMAKER_CONTAINER_LOG_LEVEL": "20"}, ("log_level", logging.INFO)),
        ({"SAGEMAKER_CONTAINER_LOG_LEVEL": "debug"}, ("log_level", logging.DEBUG)),
        ({"SAGEMAKER_CONTAINER_LOG_LEVEL": "WARNING"}, ("log_level", logging.WARNING)),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "100"}, ("max_payload_bytes", 100 * 1024 * 1024)),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0.5"}, ("max_payload_bytes", 512 * 1024)),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0"}, ("max_payload_bytes", None)),  # chunked jobs
        ({"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "Text/CSV"}, ("default_accept", "text/csv")),
        ({"SERVING_PROVIDERS": "A, B"}, ("providers", ("A", "B"))),
        ({"SERVING_LOG_PINGS": "true"}, ("log_pings", True)),
        ({"SAGEMAKER_MODEL_SERVER_WORKERS": "3"}, ("workers", 3)),
        ({"SERVING_CODEC_PLUGINS": "all"}, ("codec_plugins", None)),
        ({"SERVING_CODEC_PLUGINS": "none"}, ("codec_plugins", ())),
        ({"SERVING_CODEC_PLUGINS": "png, jpeg"}, ("codec_plugins", ("png", "jpeg"))),
        ({"SERVING_BAD_RECORDS": " Placeholder"}, ("bad_records", "placeholder")),
        ({"SAGEMAKER_BATCH_STRATEGY": "single_record"}, ("batch_strategy", "SINGLE_RECORD")),
        ({"SERVING_RECORD_CHUNK_MB": "0.25"}, ("record_chunk_mb", 0.25)),
    ],
)
def test_values_parse(environ: dict[str, str], expected: tuple[str, object]) -> None:
    name, value = expected
    assert getattr(Settings.from_sources(environ, cpus=2), name) == value


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SAGEMAKER_BIND_TO_PORT": "http"}, "SAGEMAKER_BIND_TO_PORT='http': not a whole number"),
        ({"SAGEMAKER_BIND_TO_PORT": "0"}, "SAGEMAKER_BIND_TO_PORT='0': must be between 1"),
        ({"SAGEMAKER_MODEL_SERVER_WORKERS": "-1"}, "SAGEMAKER_MODEL_SERVER_WORKERS='-1'"),
        ({"SAGEMAKER_MODEL_SERVER_TIMEOUT": "1.5"}, "SAGEMAKER_MODEL_SERVER_TIMEOUT='1.5'"),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "-1"}, "SAGEMAKER_MAX_PAYLOAD_IN_MB='-1': must be"),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "lots"}, "SAGEMAKER_MAX_PAYLOAD_IN_MB='lots'"),
        ({"SAGEMAKER_CONTAINER_LOG_LEVEL": "LOUD"}, "SAGEMAKER_CONTAINER_LOG_LEVEL='LOUD'"),
        ({"SAGEMAKER_CONTAINER_LOG_LEVEL": "99"}, "SAGEMAKER_CONTAINER_LOG_LEVEL='99'"),
        ({"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "json"}, "not a media type"),
        ({"SERVING_LOG_PINGS": "maybe"}, "SERVING_LOG_PINGS='maybe': not a boolean"),
        ({"SERVING_PROVIDERS": " , "}, "SERVING_PROVIDERS"),
        ({"SERVING_BAD_RECORDS": "skip"}, "'skip': must be reject or placeholder"),
        ({"SERVING_RECORD_CHUNK_MB": "0"}, "SERVING_RECORD_CHUNK_MB='0'"),
    ],
)
def test_invalid_environment_is_refused_naming_the_variable(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match="invalid") as raised:
        Settings.from_sources(environ, cpus=1)
    assert message in str(raised.value)


def test_invalid_flag_is_refused_naming_the_flag() -> None:
    with pytest.raises(SettingsError, match="invalid --workers 'many': not a whole number"):
        Settings.from_sources({}, {"workers": "many"}, cpus=1)


@pytest.mark.parametrize(
    ("cpus", "workers", "threads", "expected"),
    [(8, "0", "0", (8, 1)), (8, "2", "0", (2, 4)), (8, "3", "0", (3, 2)), (1, "4", "0", (4, 1)),
     (8, "2", "3", (2, 3))],
)  # fmt: skip
def test_automatic_sizing(cpus: int, workers: str, threads: str, expected: tuple[int, int]) -> None:
    settings = Settings.from_sources(
        {"SAGEMAKER_MODEL_SERVER_WORKERS": workers, "SERVING_INFERENCE_THREADS": threads}, cpus=cpus
    )
    assert (settings.workers, settings.inference_threads) == expected


def test_every_setting_has_a_distinct_flag_and_variable() -> None:
    assert len({s.flag for s in SETTINGS}) == len(SETTINGS)
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)


def test_readme_configuration_table_matches_the_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "run: python -m tests.update_readme"
    assert updated(readme) == readme


def _cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "self_cgroup", "quota"),
    [
        ({}, "0::/\n", None),
        ({"cpu.max": "max 100000\n"}, "0::/\n", None),
        ({"cpu.max": "150000 100000\n"}, "0::/\n", 1.5),
        (
            {"cpu.max": "400000 100000", "a/cpu.max": "max 100000", "a/b/cpu.max": "300000 100000"},
            "0::/a/b\n",
            3.0,
        ),
        ({"cpu.max": "100000 100000", "a/cpu.max": "max 100000"}, "0::/a\n", 1.0),
        (
            {"cpu,cpuacct/cpu.cfs_quota_us": "250000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            "4:cpu,cpuacct:/\n",
            2.5,
        ),
        (
            {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            "4:cpu,cpuacct:/\n",
            None,
        ),
    ],
)
def test_cgroup_quota(
    tmp_path: Path, files: dict[str, str], self_cgroup: str, quota: float | None
) -> None:
    root = _cgroup(tmp_path / "cgroup", files)
    (tmp_path / "self").write_text(self_cgroup)
    assert cgroup_cpu_quota(root, tmp_path / "self") == quota


def test_available_cpus_takes_the_smaller_of_quota_and_affinity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the host's count must not matter
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})
    affinity = 3
    (tmp_path / "self").write_text("0::/\n")
    unlimited = _cgroup(tmp_path / "unlimited", {"cpu.max": "max 100000"})
    assert available_cpus(unlimited, tmp_path / "self") == affinity
    half = _cgroup(tmp_path / "half", {"cpu.max": "50000 100000"})
    assert available_cpus(half, tmp_path / "self") == 1
    many = _cgroup(tmp_path / "many", {"cpu.max": "9900000 100000"})
    assert available_cpus(many, tmp_path / "self") == affinity


def test_the_startup_line_shows_values_as_a_user_writes_them() -> None:
    described = Settings.from_sources({}, cpus=2).describe().split()
    for shown in ("providers=auto", "codec_plugins=all", "log_level=INFO", "batch=false"):
        assert shown in described
    assert "max_payload_mb=6" in described
    assert "timeout_seconds=unset" in described
    flagged = Settings.from_sources({}, {"codec_plugins": "png,jpeg", "log_level": "25"}, cpus=1)
    assert {"codec_plugins=png,jpeg", "log_level=25"} <= set(flagged.describe().split())


def test_the_master_knows_the_builtin_response_types() -> None:
    from handlers.codecs import default_codecs
    from serving.startup import BUILTIN_RESPONSE_TYPES

    assert set(default_codecs().encodable) == BUILTIN_RESPONSE_TYPES
