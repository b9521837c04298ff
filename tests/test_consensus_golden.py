"""Golden scripted scenarios (tests/golden/*.txt), etcd-raft interaction-test style.

Each file is a script of inputs with the exact actions expected; see consensus/script.py.
To inspect a changed behaviour, run ``python -c "from consensus.script import run;
print(run(open(path).read()))"`` and diff it with the file; never regenerate blindly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.script import ScriptError, run

GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.txt"))


def test_golden_files_exist() -> None:
    names = {p.stem for p in GOLDEN}
    assert {"lock_on_polka", "unlock_on_later_polka", "late_proposal",
            "commit_after_moving_on"} <= names


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden(path: Path) -> None:
    text = path.read_text()
    assert run(text) == text


def test_a_wrong_expectation_is_caught() -> None:
    script = "start h=1\n----\ntimeout propose 1 0 999ms\n"
    assert run(script) != script


def test_script_errors_are_reported() -> None:
    with pytest.raises(ScriptError):
        run("start h=1\n")
    with pytest.raises(ScriptError):
        run("fly\n----\n")
