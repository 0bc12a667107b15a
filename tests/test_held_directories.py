"""Directories held for a command's life (``serving/endpoint/held_directories.py``): never
taken for abandoned while held, removed at the next start once their holder was killed."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from serving.endpoint import extractions
from serving.endpoint.held_directories import LOCK_NAME, HeldDirectory, remove_abandoned

PREFIX = "held-"


def test_a_held_directory_is_not_abandoned_until_removed(tmp_path: Path) -> None:
    held = HeldDirectory(tmp_path / f"{PREFIX}one")
    (held.path / "model.onnx").write_bytes(b"x")
    assert remove_abandoned(tmp_path, PREFIX) == []  # a lock of this very process counts
    assert (held.path / "model.onnx").exists()
    held.remove()
    assert list(tmp_path.iterdir()) == []


def killed_holder(path: Path) -> None:
    """``path`` held by another process, then that process killed with SIGKILL;
    asserts that the directory is not abandoned while its holder runs."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from serving.endpoint.held_directories import HeldDirectory; "
            "held = HeldDirectory(Path(sys.argv[1])); "
            "(held.path / 'model.onnx').write_bytes(b'x'); print('held', flush=True); "
            "time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        assert remove_abandoned(path.parent, path.name) == []  # its holder runs
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_the_directory_of_a_killed_holder_is_removed_and_nothing_else(tmp_path: Path) -> None:
    killed_holder(tmp_path / f"{PREFIX}killed")
    (tmp_path / f"{PREFIX}unlocked").mkdir()  # no lock file: not known to be ours
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / LOCK_NAME).touch()
    assert remove_abandoned(tmp_path, PREFIX) == [tmp_path / f"{PREFIX}killed"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"{PREFIX}unlocked", "other"]


def test_a_multi_model_variant_removes_what_a_killed_run_extracted(tmp_path: Path) -> None:
    killed_holder(tmp_path / f"{extractions.PREFIX}4242-0123abcd")
    (tmp_path / "model-a").mkdir()
    extractions.Extractions(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["model-a"]


def test_a_directory_that_cannot_be_made_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / f"{PREFIX}taken").mkdir()
    (tmp_path / f"{PREFIX}taken" / "file").touch()  # not empty: the rename fails
    with pytest.raises(OSError, match="not empty"):
        HeldDirectory(tmp_path / f"{PREFIX}taken")
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"{PREFIX}taken"]
