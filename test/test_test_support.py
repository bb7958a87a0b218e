"""The test suite's own rule for optional modules: skipped locally, a failure under CI=true."""

from __future__ import annotations

import pytest
from ros_test_support import environment, require_module

MISSING = "mirror_no_such_module"


def test_a_missing_module_skips_locally_and_fails_under_ci() -> None:
    with environment(CI="false"), pytest.raises(pytest.skip.Exception):
        require_module(MISSING)
    with environment(CI="true"), pytest.raises(ModuleNotFoundError):
        require_module(MISSING)
    with environment(CI="true"):
        assert require_module("json").dumps([]) == "[]"
