"""End-to-end fixtures: one real libvirt lab (tests/lab) per test session.

The lab needs root and the packages of tests/lab/install_deps.sh. Without them the e2e
tests are skipped with the reason printed, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Iterator

import pytest

from tests.lab.host import Lab, missing_prerequisites
from tests.lab.proc import LabError

_LABS: list[Lab] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: end-to-end test with a real libvirtd and guests in network namespaces "
        "(root; install tests/lab/install_deps.sh first)",
    )


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> None:
    """Skip (print the reason), or fail under CI=true."""
    message = f"e2e lab unavailable: {reason}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    print(message, file=sys.stderr)
    pytest.skip(message)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The session's lab: namespaces, libvirtd, network 'default' up; torn down at the end."""
    missing = missing_prerequisites()
    if missing:
        unavailable("missing " + ", ".join(missing) + " (run tests/lab/install_deps.sh as root)")
    instance = Lab(workdir=tmp_path_factory.mktemp("lab"))
    try:
        instance.start()
    except LabError as exc:
        unavailable(f"lab did not start: {exc}")
    _LABS.append(instance)
    print(f"\nlab up: {format_timings(instance.timings)}")
    try:
        yield instance
    finally:
        instance.close()


def format_timings(timings: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:.2f}s" for key, value in timings.items())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for instance in _LABS:
        terminalreporter.write_sep("-", "e2e lab timings")
        for key, value in instance.timings.items():
            terminalreporter.write_line(f"{key:<32} {value:7.2f} s")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On an e2e failure, attach the tail of every lab guest's serial log to the report."""
    report = yield
    if report.failed and call.when == "call" and _LABS:
        for instance in _LABS:
            for name in instance.guests:
                report.sections.append((f"serial log {name}", instance.serial_log(name)[-3000:]))
    return report
