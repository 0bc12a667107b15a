"""What a multi-model server may use: the container's memory limit, and resident memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.memory import memory_limit, resident_bytes
from serving.settings import Settings, SettingsError

GIB = 1 << 30


def _files(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "self_cgroup", "expected"),
    [
        ({}, "0::/\n", 16 * GIB),  # no cgroup limit: the machine's memory
        ({"memory.max": "max\n"}, "0::/\n", 16 * GIB),
        ({"memory.max": f"{2 * GIB}\n"}, "0::/\n", 2 * GIB),
        ({"memory.max": f"{4 * GIB}", "a/memory.max": f"{3 * GIB}", "a/b/memory.max": "max"},
         "0::/a/b\n", 3 * GIB),
        ({"memory/memory.limit_in_bytes": "9223372036854771712"}, "4:memory:/\n", 16 * GIB),
        ({"memory/memory.limit_in_bytes": f"{GIB}"}, "4:memory:/\n", GIB),
        ({"memory.max": f"{64 * GIB}"}, "0::/\n", 16 * GIB),  # more than the machine has
    ],
)  # fmt: skip
def test_memory_limit(
    tmp_path: Path, files: dict[str, str], self_cgroup: str, expected: int
) -> None:
    root = _files(tmp_path / "cgroup", files)
    (tmp_path / "self").write_text(self_cgroup)
    (tmp_path / "meminfo").write_text(f"MemTotal:       {16 * GIB // 1024} kB\nMemFree: 1 kB\n")
    assert memory_limit(root, tmp_path / "self", tmp_path / "meminfo") == expected


def test_resident_bytes_grow_with_what_is_touched() -> None:
    before = resident_bytes()
    ballast = bytearray(b"x" * (32 << 20))
    assert resident_bytes() - before >= 30 << 20
    assert ballast[-1] == ord("x")
    assert resident_bytes(2**22 + 12345) == 0  # no such process


def test_multi_model_settings() -> None:
    settings = Settings.from_sources(
        {
            "SAGEMAKER_MULTI_MODEL": "true",
            "SAGEMAKER_BASE_DIR": "/srv/ml",
            "SERVING_MME_MEMORY_MB": "512",
            "SERVING_MME_EVICT": "LRU",
            "SERVING_MME_LOAD_TIMEOUT": "90.5",
        },
        cpus=2,
    )
    assert settings.multi_model is True
    assert settings.models_dir == Path("/srv/ml/models")
    assert (settings.mme_memory_mb, settings.mme_evict) == (512.0, "lru")
    assert settings.mme_load_timeout == 90.5
    defaults = Settings.from_sources({}, cpus=2)
    assert (defaults.multi_model, defaults.models_dir) == (False, Path("/opt/ml/models"))
    assert (defaults.mme_memory_mb, defaults.mme_evict) == (0.0, "none")
    assert defaults.mme_load_timeout == 360.0  # SageMaker's own bound on a load
    assert Settings.from_sources({"SERVING_MODELS_DIR": "/m"}, cpus=1).models_dir == Path("/m")
    with pytest.raises(SettingsError, match="SERVING_MME_EVICT='fifo': must be none or lru"):
        Settings.from_sources({"SERVING_MME_EVICT": "fifo"}, cpus=1)


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_load_timeout_must_be_a_positive_number(value: str) -> None:
    with pytest.raises(SettingsError, match=f"SERVING_MME_LOAD_TIMEOUT='{value}'"):
        Settings.from_sources({"SERVING_MME_LOAD_TIMEOUT": value}, cpus=1)
