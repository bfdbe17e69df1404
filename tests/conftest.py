"""Shared test helpers: where the repo, its interpreter and its test data are."""

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
PYTHON = sys.executable  # the test venv's interpreter: it has the package installed
HOOK = REPO / "hooks" / "qemu"


def need_root() -> None:
    """Namespace tests need root; on CI a missing prerequisite is a failure, not a skip."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("namespace tests need root (CI=true: not skipping)")
        pytest.skip("namespace tests need root")
