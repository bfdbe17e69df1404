"""Names for what the tests create on the machine, carrying the test run's tag.

Every test session has a run tag (``LIBVIRT_PORTFWD_TEST_RUN``, 8 hex digits): tests/conftest.py
sets a new one at session start, and child processes inherit it in their environment. Names of
what the tests create outside their temporary directories (network namespaces today) come from
``unique(prefix)``: ``<prefix>-<run tag>-<6 hex>``, e.g. ``pfh-1a2b3c4d-0e9f8a``. So the end of
session check (tests/machine.py) tells this run's namespaces and processes from another run's on
the same machine: ``is_ours(name)``. Outside pytest (bench/, ``python -m tests.lab``) the first
call makes a tag for the process and exports it the same way.
"""

import os
import re
import secrets

RUN_ENV = "LIBVIRT_PORTFWD_TEST_RUN"
_TAG = re.compile(r"[0-9a-f]{8}")


def new_run_tag() -> str:
    """Start a run: a fresh tag, exported to every child process from now on."""
    tag = secrets.token_hex(4)
    os.environ[RUN_ENV] = tag
    return tag


def run_tag() -> str:
    """This run's tag (a new one when none was started or the variable is not one of ours)."""
    tag = os.environ.get(RUN_ENV, "")
    return tag if _TAG.fullmatch(tag) else new_run_tag()


def unique_suffix() -> str:
    """``<run tag>-<6 hex>``, for names made of one suffix and several prefixes."""
    return f"{run_tag()}-{secrets.token_hex(3)}"


def unique(prefix: str) -> str:
    """A name no other run and no other call uses: ``<prefix>-<run tag>-<6 hex>``."""
    return f"{prefix}-{unique_suffix()}"


def is_ours(name: str, tag: str | None = None) -> bool:
    """Whether ``name`` was made by ``unique``/``unique_suffix`` in this run (or run ``tag``)."""
    return f"-{tag or run_tag()}-" in name
