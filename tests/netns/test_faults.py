"""Under faults: every hook run returns within the bound (policy.BOUND), and what it could not
do is completed without an admin once the fault is gone (intents.py; issue 11).

- The xtables lock held by another program, with iptables-legacy: the lock file is machine-wide,
  so the host runs in a private mount namespace of its own (a tmpfs /run, iptables-legacy in
  place of iptables-nft, libvirt's rules loaded with it).
- An ``nft`` that hangs, first on the hook's PATH (the watcher keeps the real one).
The watcher runs as its service would, but takes no hook's work (``--no-socket``): these are the
faults of a hook doing its own work (the hooks' hand-over to the service: test_warm.py). A
start under ``on_error: allow`` goes live once the fault is gone; under ``block`` it fails and
nothing of the domain is ever in the firewall; a stop's rules are gone once the fault is gone,
and nothing rebuilds them in between.
"""

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from libvirt_portfwd.policy import BLOCKED, BOUND, OK
from tests.conftest import DATA, REPO, need_root
from tests.netns.conftest import Lab, sh
from tests.netns.fakehost import HOOK_PATH
from tests.netns.test_hook import WEB1, guide_xml
from tests.sandbox import Sandbox

pytestmark = pytest.mark.netns

WITHIN = BOUND + 2.0  # the bound, plus starting an interpreter or two on a loaded machine

# the host's own view: a tmpfs /run (a private xtables lock) and iptables-legacy as iptables
LEGACY = (
    "mount -t tmpfs -o mode=0755 pf-run /run\n"
    'mount --bind /usr/sbin/xtables-legacy-multi "$(readlink -f /usr/sbin/iptables)"\n'
)


class FaultLab(Lab):
    """The namespace host, optionally in a mount namespace of its own (``legacy``), with the
    watcher running, and ways to make the firewall tools hang or wait."""

    def __init__(self, tmp: Path, kind: str, legacy: bool) -> None:
        super().__init__(tmp, kind)
        self.legacy = legacy
        self.tools = tmp / "tools"
        self.view: Sandbox | None = None
        self.watcher: subprocess.Popen[str] | None = None

    def create(self) -> None:
        super().create()
        if self.legacy:
            self.exec(self.host, "iptables-nft", "-F")  # libvirt's rules go to the legacy tables
            self.exec(self.host, "iptables-nft", "-t", "nat", "-F")
            self.exec(self.host, "iptables-nft", "-X")
            self.exec(self.host, "iptables-nft", "-t", "nat", "-X")
            self.view = Sandbox(self.tools.parent / "legacy", self.host, mounts=LEGACY)
            version = sh(*self.enter(), "iptables", "-V")
            assert "legacy" in version, version
            sh(*self.enter(), "iptables-restore", "--noflush", input=(DATA / "libvirt-iptables.rules").read_text())
        self.tools.mkdir()
        self.watcher_log = self.tools.parent / "watcher.log"
        with open(self.watcher_log, "w") as log:
            self.watcher = subprocess.Popen(
                [*self.watcher_argv(), "--no-socket"],  # the hooks under test do their own work
                stdout=subprocess.DEVNULL, stderr=log, cwd=REPO, start_new_session=True,
            )  # fmt: skip
        time.sleep(0.5)

    def destroy(self) -> None:
        if self.watcher is not None:
            print(f"watcher's log:\n{self.watcher_log.read_text()}")  # shown when the test failed
        if self.watcher is not None:
            os.killpg(self.watcher.pid, signal.SIGKILL)
            self.watcher.wait()
        if self.view is not None:
            self.view.close()  # and everything that ran in it
        super().destroy()

    def enter(self) -> list[str]:
        return self.view.argv() if self.view is not None else super().enter()

    def hold_xtables_lock(self) -> subprocess.Popen[str]:
        return subprocess.Popen([*self.enter(), "flock", "/run/xtables.lock", "sleep", "600"], start_new_session=True)

    def hanging_nft(self, on: bool) -> None:
        nft = self.tools / "nft"
        nft.write_text("#!/bin/sh\nexec sleep 600\n")
        nft.chmod(0o755)
        self.hook_path = f"{self.tools}:{HOOK_PATH}" if on else HOOK_PATH

    def timed_hook(self, operation: str, sub: str = "begin") -> int:
        begin = time.monotonic()
        proc = self.hook("web1", guide_xml(), operation, sub, timeout=60)
        took = time.monotonic() - begin
        assert took < WITHIN, f"{operation} took {took:.1f} s (bound {BOUND} s): {proc.stderr}"
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        return proc.returncode


def release(fault: subprocess.Popen[str] | None, lab: FaultLab) -> None:
    if fault is not None:
        os.killpg(fault.pid, signal.SIGKILL)
        fault.wait()
    lab.hanging_nft(False)


def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.1)


FAULTS = [("xtables-lock", "iptables", True), ("hanging-nft", "nftables", False)]


@pytest.fixture(params=FAULTS, ids=[f[0] for f in FAULTS])
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FaultLab]:
    need_root()
    fault, kind, legacy = request.param
    lab = FaultLab(tmp_path, kind, legacy)
    lab.fault = fault  # type: ignore[attr-defined]
    try:
        lab.create()
        yield lab
    finally:
        lab.destroy()


def fault_on(lab: FaultLab) -> subprocess.Popen[str] | None:
    if lab.fault == "xtables-lock":  # type: ignore[attr-defined]
        return lab.hold_xtables_lock()
    lab.hanging_nft(True)
    return None


def test_a_start_and_a_stop_under_a_fault_are_bounded_and_completed_once_it_is_gone(lab: FaultLab) -> None:
    before = lab.firewall()
    fault = fault_on(lab)
    time.sleep(0.3)
    assert [lab.timed_hook(op) for op in ("prepare", "start", "started")] == [OK, OK, OK]
    if fault is not None:  # the lock is held for everyone (a hanging nft is the hook's alone)
        assert lab.probe("tcp", 20443, timeout=0.5).startswith("ERROR")
        assert lab.pending() in ([f"{WEB1}.json"], [f"{WEB1}.taken"]), lab.pending()
    release(fault, lab)
    lab.wait_for("tcp", 20443, "guest tcp 443", within=5)  # nobody typed anything
    eventually(lambda: not lab.pending(), 3, "the intent done")

    fault = fault_on(lab)
    time.sleep(0.3)
    assert lab.timed_hook("stopped", "end") == OK and lab.timed_hook("release", "end") == OK
    if fault is not None:
        status = lab.cli("status")
        assert "pending  removal" in status.stdout, status.stdout + status.stderr
        time.sleep(3)  # the watcher does not rebuild the stopped domain's rules meanwhile
        assert lab.records()[WEB1]["status"] == "live" and lab.pending()
    release(fault, lab)
    eventually(lambda: lab.firewall() == before, 5, "the stopped domain's rules gone")
    eventually(lambda: lab.records() == {} and not lab.pending(), 3, "its record and intents gone")


def test_a_start_refused_under_block_leaves_nothing_of_the_domain(lab: FaultLab) -> None:
    before = lab.firewall()
    lab.write_config("lease_wait: 20\non_error: block\n")
    fault = fault_on(lab)
    time.sleep(0.3)
    assert lab.timed_hook("prepare") == OK  # nothing to wait for there
    assert lab.timed_hook("started") == BLOCKED
    release(fault, lab)
    time.sleep(3)
    assert lab.firewall() == before and lab.records() == {}
    eventually(lambda: not lab.pending(), 3, "the refused start's intents done")
    index = lab.root / "run/libvirt-portfwd/index.json"
    assert not index.exists() or json.loads(index.read_text()) == {}


REFUSE_FILTER = """#!/bin/sh
# the real iptables-restore, given a filter section it must refuse (a jump to no chain)
sed '/^\\*filter$/a -A FORWARD -j PFNOSUCHCHAIN' | exec /usr/sbin/iptables-restore "$@"
"""


@pytest.mark.parametrize("legacy", [False, True], ids=["iptables-nft", "iptables-legacy"])
def test_a_refused_filter_half_leaves_nothing_open(tmp_path: Path, legacy: bool) -> None:
    """iptables-restore commits table by table (both variants): our adds write filter first, so a
    refused filter half leaves no nat half; our removals take nat first, so what a refused filter
    half leaves is filter's accepts alone (inert: they match only connections our DNAT made), and
    the pending removal is completed once the firewall accepts it again."""
    need_root()
    lab = FaultLab(tmp_path, "iptables", legacy)
    try:
        lab.create()
        before = lab.firewall()
        refuse = lab.tools / "iptables-restore"
        refuse.write_text(REFUSE_FILTER)
        refuse.chmod(0o755)
        lab.hook_path = f"{lab.tools}:{HOOK_PATH}"
        assert lab.timed_hook("started") == OK
        nat = sh(*lab.enter(), "iptables-save", "-t", "nat")
        assert "DNAT" not in nat and "libvirt-portfwd:" not in nat, nat
        assert lab.probe("tcp", 20443, timeout=0.5).startswith("ERROR")
        lab.hook_path = HOOK_PATH
        assert lab.timed_hook("started") == OK
        lab.wait_for("tcp", 20443, "guest tcp 443", within=3)

        lab.hook_path = f"{lab.tools}:{HOOK_PATH}"
        lab.watcher_log.write_text("")
        os.killpg(lab.watcher.pid, signal.SIGSTOP)  # type: ignore[union-attr]  # the next pass: later
        assert lab.timed_hook("stopped", "end") == OK
        nat = sh(*lab.enter(), "iptables-save", "-t", "nat")
        assert "DNAT" not in nat, nat  # nat went first: nothing reaches the guest any more
        assert lab.probe("tcp", 20443, timeout=0.5).startswith("ERROR")
        filtered = sh(*lab.enter(), "iptables-save", "-t", "filter")
        assert "--ctstate DNAT" in filtered  # what remains: the accepts, inert without the DNAT
        os.killpg(lab.watcher.pid, signal.SIGCONT)  # type: ignore[union-attr]
        eventually(lambda: lab.firewall() == before, 5, "the pending removal completed by the watcher")
    finally:
        lab.destroy()
