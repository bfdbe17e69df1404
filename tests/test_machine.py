"""The machine is as the session found it (issue 10, point 5): run last in every session.

tests/conftest.py took a snapshot at session start and puts this test last, whatever was
selected; tests/machine.py says what is compared and what is left out, and why.
"""

import pytest

from tests import machine
from tests.conftest import MACHINE_BEFORE, REPO, RUN_TAG, need_root


def test_machine_left_as_found(request: pytest.FixtureRequest) -> None:
    need_root()
    assert request.session.items[-1] is request.node, "not the last test of the session"
    before = request.config.stash.get(MACHINE_BEFORE, "no snapshot was taken at session start")
    if isinstance(before, str):
        pytest.fail(before, pytrace=False)
    after = machine.take(REPO)
    problems = machine.compare(before, after) + machine.leftovers(request.config.stash[RUN_TAG], before, REPO)
    if problems:
        pytest.fail("the machine is not as this session found it:\n" + "\n".join(problems), pytrace=False)
