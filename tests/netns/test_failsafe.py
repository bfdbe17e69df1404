"""The installed hook can never take a VM down, whatever is broken under it (issue 9).

The project is installed by install.sh (tests/netns/installed_lab.py), a forward is live, and
then the runtime is broken in one way per test. Every operation libvirt runs must then exit 0
with nothing on stdout and at most one line on stderr (never a traceback), except the start of
a domain with forwards under ``on_error: block``, which exits BLOCKED. Then the repair (install.sh
again, or undoing what the admin or the upgrade broke) and the forward works again.
"""

import glob
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from libvirt_portfwd.policy import BLOCKED, OK, POLICY
from tests.conftest import need_root
from tests.installed import CONFIG, CURRENT, PREFIX, RUN_DIR
from tests.netns.fakehost import domain_xml
from tests.netns.installed_lab import InstalledLab
from tests.netns.test_hook import WEB2, guide_xml

pytestmark = pytest.mark.netns

PYTHON = os.path.realpath("/usr/bin/python3")  # what the shim runs: /usr/bin/python3.11 on Debian 12
PACKAGE = CURRENT / "libvirt_portfwd"


def other_python() -> str:
    """An interpreter of another minor version (pyenv's, on these machines), as if a distribution
    upgrade had replaced Python but not (yet) the dependencies built for it."""
    mine = re.sub(r"^.*python(3\.\d+)$", r"\1", PYTHON)
    for candidate in sorted(glob.glob("/root/.pyenv/versions/3.*/bin/python3.*")):
        version = re.sub(r"^.*python(3\.\d+)$", r"\1", candidate)
        if re.fullmatch(r"3\.\d+", version) and version != mine and int(version.split(".")[1]) >= 11:
            return candidate
    if os.environ.get("CI") == "true":
        pytest.fail("no Python of another minor version on this machine")
    pytest.skip("no Python of another minor version on this machine")


def syntax_error(module: str) -> list[str]:
    return ["sh", "-c", f"echo 'def broken(:' >> {PACKAGE / module}"]


# break -> (commands run inside the sandbox, how it is repaired: "install" = ./install.sh again,
# else the commands that undo it: what the admin or the finished upgrade does)
BREAKS: dict[str, tuple[Callable[[], list[list[str]]], str | Callable[[], list[list[str]]]]] = {
    "python-of-another-version": (
        lambda: [["mount", "--bind", other_python(), PYTHON]],
        lambda: [["umount", PYTHON]],
    ),
    "interpreter-missing": (lambda: [["mount", "--bind", "/dev/null", PYTHON]], lambda: [["umount", PYTHON]]),
    "package-removed": (lambda: [["rm", "-rf", str(PACKAGE)]], "install"),
    "runtime-deleted": (lambda: [["rm", "-rf", str(PREFIX)]], "install"),
    "syntax-error-in-hook.py": (lambda: [syntax_error("hook.py")], "install"),
    "syntax-error-in-paths.py": (lambda: [syntax_error("paths.py")], "install"),
    "syntax-error-in-plan.py": (lambda: [syntax_error("plan.py")], "install"),  # imported later
    "config-unreadable": (
        lambda: [["mv", str(CONFIG), f"{CONFIG}.saved"], ["mkdir", str(CONFIG)]],
        lambda: [["rmdir", str(CONFIG)], ["mv", f"{CONFIG}.saved", str(CONFIG)]],
    ),
    "run-dir-read-only": (
        lambda: [["mount", "--bind", str(RUN_DIR), str(RUN_DIR)], ["mount", "-o", "remount,ro,bind", str(RUN_DIR)]],
        lambda: [["umount", str(RUN_DIR)]],
    ),
}
# the runtime cannot start at all: every operation says so, in one line
CANNOT_START = ("interpreter-missing", "package-removed", "runtime-deleted", "syntax-error-in-hook.py")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[InstalledLab]:
    need_root()
    lab = InstalledLab(tmp_path)
    try:
        lab.create()
        yield lab
    finally:
        lab.destroy()


def start_live(lab: InstalledLab) -> None:
    for proc in lab.start("web1", guide_xml()):
        assert (proc.returncode, proc.stdout) == (OK, ""), proc.stderr
    lab.wait_for("tcp", 20443, "guest tcp 443", within=2)


def lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert proc.stdout == "" and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    return [line for line in proc.stderr.splitlines() if line]


@pytest.mark.parametrize("broken", list(BREAKS))
def test_a_broken_runtime_never_fails_a_vm_and_install_repairs_it(lab: InstalledLab, broken: str) -> None:
    start_live(lab)
    lab.write_config("lease_wait: 20\non_error: allow\n")
    plain = domain_xml("plain", WEB2, mac="52:54:00:aa:bb:dd")
    assert lab.hook("plain", plain, "started").returncode == OK  # the config is cached, as on a host
    breaks, repair = BREAKS[broken]
    for argv in breaks():
        lab.inside(*argv)

    calls = [
        ("web1", guide_xml(), "reconnect", "begin"),
        ("web1", guide_xml(), "migrate", "begin"),
        ("plain", plain, "started", "begin"),
        ("plain", plain, "stopped", "end"),
        ("plain", plain, "release", "end"),
        ("web1", guide_xml(), "started", "begin"),  # with forwards, on_error: allow
    ]
    for name, xml, operation, sub in calls:
        proc = lab.hook(name, xml, operation, sub)
        said = lines(proc)
        assert proc.returncode == OK, f"{operation}: exit {proc.returncode}: {said}"
        assert len(said) <= 1, f"{operation}: {said}"
        if operation not in POLICY:  # nothing to do: the shim ends it without starting Python
            assert said == [], f"{operation}: {said}"
        elif broken in CANNOT_START:
            assert len(said) == 1 and "install.sh" in said[0] and f"{name}: {operation}" in said[0], said
    network = lab.network_hook("default", "started")
    assert network.returncode == OK and len(lines(network)) <= 1

    # on_error: block, for a domain with forwards of ours: the start is refused (prepare and
    # started), unless no readable config says block (then nobody asked for it)
    if broken == "config-unreadable":
        expected = OK
    else:
        lab.write_config("lease_wait: 20\non_error: block\n")
        expected = BLOCKED
    for operation in ("prepare", "started"):
        proc = lab.hook("web1", guide_xml(), operation)
        if broken == "run-dir-read-only" and operation == "prepare":
            assert proc.returncode == OK  # its check writes nothing, and finds nothing wrong
            continue
        assert proc.returncode == expected, f"{operation}: exit {proc.returncode}: {lines(proc)}"
        assert len(lines(proc)) <= 2
    for proc in lab.stop("web1", guide_xml()):  # and stopping never fails (a working stop says 2 lines)
        assert proc.returncode == OK and len(lines(proc)) <= 2, proc.stderr

    if repair == "install":
        lab.install()
    else:
        assert callable(repair)
        for argv in repair():
            lab.inside(*argv)
    lab.write_config("lease_wait: 20\n")
    start_live(lab)
    for proc in lab.stop("web1", guide_xml()):
        assert proc.returncode == OK and not [line for line in lines(proc) if "error" in line], proc.stderr
    assert lab.our_rules() == []


def test_a_hook_running_while_install_rebuilds_sees_one_release_or_the_other(lab: InstalledLab) -> None:
    start_live(lab)
    before = sorted(lab.our_rules())
    results: list[subprocess.CompletedProcess[str]] = []
    done = threading.Event()

    def reconnect_until_done() -> None:
        while not done.is_set():
            results.append(lab.hook("web1", guide_xml(), "reconnect"))

    runner = threading.Thread(target=reconnect_until_done)
    runner.start()
    try:
        for _ in range(3):
            lab.install()
    finally:
        done.set()
        runner.join(timeout=60)
    assert len(results) >= 3
    for proc in results:
        assert proc.returncode == OK and not [line for line in lines(proc) if " live" not in line], proc.stderr
    assert sorted(lab.our_rules()) == before
    lab.wait_for("tcp", 20443, "guest tcp 443", within=2)
