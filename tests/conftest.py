"""Shared test helpers: where the repo, its interpreter, its hooks and its test data are."""

import os
import sys
from pathlib import Path

import pytest

from libvirt_portfwd import shim

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
PYTHON = sys.executable  # the test venv's interpreter: it has the package installed


def rendered_hook(kind: str) -> Path:
    """The checkout's hook exactly as install.sh writes it, but running this checkout's code and
    reading the default config (under $LIBVIRT_PORTFWD_ROOT): what the namespace tests run."""
    path = REPO / ".cache" / "hooks" / kind
    text = shim.render(kind, "", str(REPO))
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{kind}.{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(path)
    return path


HOOK = rendered_hook("qemu")
NETWORK_HOOK = rendered_hook("network")


def need_root() -> None:
    """Namespace tests need root; on CI a missing prerequisite is a failure, not a skip."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("namespace tests need root (CI=true: not skipping)")
        pytest.skip("namespace tests need root")
