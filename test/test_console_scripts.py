"""Every console script of setup.py reports the project's own errors as one line and exit code 2."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

from mirror_common.cli import EXIT_USAGE, console_main
from sim_bridge.errors import UnknownTaskError

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = re.findall(r'"(\w+) = ([\w.]+):(\w+)"', (REPO / "setup.py").read_text())


def test_setup_lists_the_console_scripts() -> None:
    assert len(ENTRY_POINTS) >= 15 and {"train_joint", "evaluate", "mirror_bringup"} <= {
        n for n, _, _ in ENTRY_POINTS
    }


@pytest.mark.parametrize(("name", "module", "function"), ENTRY_POINTS, ids=[n for n, _, _ in ENTRY_POINTS])
def test_every_console_script_is_wrapped(name: str, module: str, function: str) -> None:
    assert getattr(getattr(importlib.import_module(module), function), "console_main", False), name


@pytest.mark.faults
def test_a_project_error_becomes_one_line_and_exit_code_2(capsys, monkeypatch) -> None:
    @console_main
    def main(argv: list[str] | None = None) -> int:
        raise UnknownTaskError("unknown task 'fold_laundry'")

    monkeypatch.setattr(sys, "argv", ["/some/bin/replay_demos", "--tasks", "fold_laundry"])
    assert main() == EXIT_USAGE
    assert capsys.readouterr().err == "replay_demos: error: unknown task 'fold_laundry'\n"

    @console_main
    def buggy(argv: list[str] | None = None) -> int:
        raise KeyError("a bug keeps its traceback")

    with pytest.raises(KeyError):
        buggy()
