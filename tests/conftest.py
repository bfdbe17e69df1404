"""Shared test helpers: where the repo, its interpreter, its hooks and its test data are."""

import os
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path

import pytest

from libvirt_portfwd import shim
from tests import machine
from tests.names import new_run_tag

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


# --- the machine as the session found it (tests/machine.py, tests/test_machine.py) -------------

MACHINE_TEST = REPO / "tests" / "test_machine.py"
MACHINE_BEFORE = pytest.StashKey[machine.Snapshot | str]()  # the snapshot, or why there is none
RUN_TAG = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        help="every end-to-end scenario on every stock host and backend (default: the matrix of tests/e2e/matrix.py)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """A new run tag for this session, inherited by every child process (tests/names.py)."""
    config.stash[RUN_TAG] = new_run_tag()


def pytest_sessionstart(session: pytest.Session) -> None:
    """The machine before any test: after tests/run's own installs, before collection."""
    if os.geteuid() == 0:
        try:
            session.config.stash[MACHINE_BEFORE] = machine.take(REPO)
        except (AssertionError, OSError, ValueError, subprocess.SubprocessError) as exc:  # the last test says it
            session.config.stash[MACHINE_BEFORE] = f"no snapshot at session start: {exc}"


@pytest.hookimpl(wrapper=True, tryfirst=True)  # the outermost wrapper: after every other reordering
def pytest_collection_modifyitems(session: pytest.Session, items: list[pytest.Item]) -> Generator[None, None, None]:
    """tests/test_machine.py runs last in every session, whatever else was selected."""
    yield
    last = [item for item in items if item.path == MACHINE_TEST]
    if not last:
        last = list(session.genitems(pytest.Module.from_parent(session, path=MACHINE_TEST)))
    items[:] = [item for item in items if item not in last] + last
