"""The reliability suite's quick cases (``benchmarks/reliability.py --quick``): each attack of
issue 15's table, and a short soak, against a real server, with what must hold asserted.
The full-size run is a script, like the benchmarks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))

import reliability

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> reliability.Work:
    reliability.raise_file_limit(4000)  # for the idle-connection cases, and their servers
    return reliability.Work(tmp_path_factory.mktemp("reliability"))


@pytest.mark.parametrize("name", list(reliability.CASES))
def test_what_must_hold_holds(name: str, work: reliability.Work) -> None:
    outcome = reliability.run_case(name, quick=True, work=work)
    assert outcome.passed, outcome.details()


def test_the_script_writes_its_table_under_the_notes(tmp_path: Path) -> None:
    output = tmp_path / "reliability.md"
    output.write_text("# Notes kept\n\n## Latest run\n\nold table\n")
    command = [sys.executable, "benchmarks/reliability.py", "--quick", "--only", "bad-chunk"]
    command += ["--output", str(output)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 1), result.stderr
    text = output.read_text()
    assert text.startswith("# Notes kept\n\n## Latest run\n\n`python benchmarks/reliability.py")
    assert "old table" not in text
    assert "| 6 | `bad-chunk` |" in text
