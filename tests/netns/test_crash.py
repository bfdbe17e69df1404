"""Convergence after a crash at any instant (issue 11).

A clean run of each scenario is traced (strace) to enumerate the points where the code renames
a file into place (an intent, a record, the index, a cache) or waits for a command (a firewall
transaction or listing); then the scenario is run again once per point with a real SIGKILL
injected at that syscall (strace's signal injection: nothing in the code knows). After each
kill, the next ``sync`` or, separately, the next watcher pass must leave the firewall holding
exactly what the records say, nothing of a stopped domain, and no claim held by nobody (another
domain can take the port). The same with /run full (ENOSPC injected at each write of a file
under the run dir, and a really full tmpfs).
"""

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, need_root
from tests.netns.conftest import Lab, port_forward, portfwd_metadata
from tests.netns.fakehost import GUEST_ADDRESS, GUEST_MAC, HOOK_PATH, domain_xml
from tests.netns.test_cli import node_xml
from tests.netns.test_hook import WEB1, WEB2, guide_xml

pytestmark = pytest.mark.netns

BOOT = str(REPO / "hooks" / "boot.py")
# a rename puts a file in place; a fork starts a command (a firewall listing or transaction):
# killed there, the command has not run; killed at the next point, it has (a parent killed while
# its child runs is the same: the child finishes). Forks, not waits: waits are polled, their
# count varies from run to run.
KILLABLE = "rename,renameat,renameat2,clone,clone3,vfork,fork"
GONE = "9b3f2e1c-8c5d-4e77-9c50-4b2d8c8c3e03"


def gone_xml() -> str:
    return domain_xml(
        "gone", GONE, mac="52:54:00:aa:bb:ee", metadata=portfwd_metadata(port_forward("tcp", [(2222, 22)]))
    )


def web2_xml() -> str:  # claims web1's port
    return domain_xml(
        "web2", WEB2, mac="52:54:00:aa:bb:dd", metadata=portfwd_metadata(port_forward("tcp", [(20443, 22)]))
    )


class CrashLab(Lab):
    def traced(self, argv: list[str], inject: str = "", xml: str = "") -> tuple[int, list[str]]:
        """Run ``argv`` (a python -I -S boot.py command) in the host, under strace."""
        trace = self.root.parent / "strace.out"
        env = [f"PATH={HOOK_PATH}", "LC_ALL=C", "HOME=/root", f"LIBVIRT_PORTFWD_ROOT={self.root}"]
        what = ["-e", f"trace={KILLABLE},execve,write", "-y"] + (["-e", f"inject={inject}"] if inject else [])
        command = ["ip", "netns", "exec", self.host, "env", "-i", *env, "strace", "-f", "-qq", "-o", str(trace)]
        proc = subprocess.run([*command, *what, *argv], input=xml, capture_output=True, text=True, timeout=90)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.returncode, trace.read_text().splitlines()

    def reset(self) -> None:
        """No forwards, no records, no caches: every run of a scenario passes the same points."""
        self.cli("remove", "--all", check=True)
        run_dir = self.root / "run/libvirt-portfwd"
        subprocess.run(["rm", "-rf", str(run_dir / "render"), str(run_dir / "jinja2"), str(run_dir / "config.cache")])
        self.write_leases({GUEST_MAC: GUEST_ADDRESS, "52:54:00:aa:bb:ee": "192.168.122.180"})
        self.write_config("lease_wait: 20\n")

    def watcher_pass(self) -> None:
        """The watcher's next pass: it repairs when it starts, then carries out what is pending."""
        watcher = subprocess.Popen(
            self.watcher_argv(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 6
        time.sleep(1.5)
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(watcher.pid, signal.SIGTERM)
        watcher.wait(timeout=10)

    def sync(self, tmp: Path, *running: str) -> None:
        proc = self.cli("sync", "--connect", node_xml(tmp, *running))
        assert proc.returncode == 0, proc.stderr

    def assert_converged(self, stopped: tuple[str, ...]) -> None:
        """The firewall holds exactly what the records say; nothing of ``stopped``; no claim held
        by nobody (web2 can take web1's port when web1 is not live)."""
        records = self.records()
        ours = "\n".join(self.our_rules())
        assert not self.pending(), self.pending()
        for uuid in stopped:
            assert uuid not in records and uuid not in ours
        if WEB1 in records and records[WEB1]["status"] == "waiting":  # a waiter killed: still waiting
            assert WEB1 not in ours
        elif WEB1 in records:
            assert records[WEB1]["status"] == "live" and WEB1 in ours
            assert self.probe("tcp", 20443) == "guest tcp 443"
        else:
            assert WEB1 not in ours and self.probe("tcp", 20443, timeout=0.5).startswith("ERROR")
            self.write_leases({GUEST_MAC: GUEST_ADDRESS, "52:54:00:aa:bb:dd": "192.168.122.179"})
            taken = self.hook("web2", web2_xml(), "started")
            assert taken.returncode == 0 and "conflict" not in taken.stderr, taken.stderr
            assert self.records()[WEB2]["status"] == "live"
        unknown = set(records) - {WEB1, GONE}
        assert not unknown, unknown


def python(*args: str) -> list[str]:
    return ["/usr/bin/python3", "-I", "-S", BOOT, *args]


def hook_argv(name: str, operation: str) -> list[str]:
    return python("qemu", "", name, operation, "begin", "-")


# scenario -> (set up the state before, the command killed, its stdin, running after, stopped after)
Scenario = tuple[Callable[[CrashLab], None], Callable[[CrashLab], list[str]], str, tuple[str, ...], tuple[str, ...]]


def nothing(lab: CrashLab) -> None:
    return None


def web1_live(lab: CrashLab) -> None:
    assert all(p.returncode == 0 for p in lab.start("web1", guide_xml()))


def web1_and_gone_live(lab: CrashLab) -> None:
    web1_live(lab)
    assert lab.hook("gone", gone_xml(), "started").returncode == 0


def web1_waiting(lab: CrashLab) -> None:
    lab.write_leases({})
    lab.write_config("lease_wait: 0\n")  # the waiter the hook starts gives up at once
    assert lab.hook("web1", guide_xml(), "started").returncode == 0
    time.sleep(1.0)
    assert lab.records()[WEB1]["status"] == "waiting"
    lab.write_leases({GUEST_MAC: GUEST_ADDRESS})


def waiter(lab: CrashLab) -> list[str]:
    return python("waiter", WEB1, lab.records()[WEB1]["token"])


SCENARIOS: dict[str, Scenario] = {
    "hook-started": (nothing, lambda lab: hook_argv("web1", "started"), guide_xml(), (WEB1,), ()),
    "hook-stopped": (web1_live, lambda lab: hook_argv("web1", "stopped"), guide_xml(), (), (WEB1,)),
    "waiter": (web1_waiting, waiter, "", (WEB1,), ()),
    "sync": (web1_and_gone_live, lambda lab: python("cli", "--root", str(lab.root), "sync", "--connect",
             node_xml(lab.root.parent, guide_xml())), "", (WEB1,), (GONE,)),
}  # fmt: skip


def kill_points(lines: list[str]) -> list[tuple[str, str]]:
    """The main process's renames and forks, in order: (strace's injection for it, what it is).
    strace counts each syscall apart: the n-th rename is ``rename:...:when=n``."""
    main = lines[0].split()[0]
    commands = {}
    for line in lines:
        pid, _, rest = line.partition(" ")
        rest = rest.lstrip()
        if pid != main and rest.startswith("execve(") and (found := re.search(r'\["([^"]+)"(?:, "([^"]+)")?', rest)):
            commands.setdefault(pid, " ".join(x for x in found.groups() if x))
    started = iter(commands.values())
    counts: dict[str, int] = {}
    points = []
    for line in lines:
        pid, _, rest = line.partition(" ")
        rest = rest.lstrip()
        syscall = rest.split("(", 1)[0]
        if pid != main or syscall not in KILLABLE.split(","):
            continue
        counts[syscall] = counts.get(syscall, 0) + 1
        inject = f"{syscall}:signal=SIGKILL:when={counts[syscall]}"
        if syscall.startswith("rename"):
            target = Path(re.findall(r'"([^"]+)"', rest)[-1])
            points.append((inject, f"rename -> {target.parent.name}/{target.name}"))
        else:
            points.append((inject, f"start {next(started, '?')}"))
    return points


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[CrashLab]:
    need_root()
    lab = CrashLab(tmp_path, "iptables")
    try:
        lab.create()
        yield lab
    finally:
        lab.destroy()


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_killed_at_any_point_the_next_pass_converges(lab: CrashLab, scenario: str, tmp_path: Path) -> None:
    before, command, xml, running, stopped = SCENARIOS[scenario]
    for _ in range(2):  # the first run compiles what it imports; the second is the one traced
        lab.reset()
        before(lab)
        code, lines = lab.traced(command(lab), xml=xml)
    points = kill_points(lines)
    assert code in (0, 1) and len(points) >= 3, (code, points, lines[:5])
    print(f"{scenario}: {len(points)} kill points: {[p for _, p in points]}")
    for converge in ("sync", "watcher"):
        for k, (inject, point) in enumerate(points, start=1):
            lab.reset()
            before(lab)
            print(f"{scenario}: killed at {point} ({inject}), then the next {converge}")
            code, lines = lab.traced(command(lab), inject=inject, xml=xml)
            assert code in (128 + signal.SIGKILL, -signal.SIGKILL), (
                f"{point}: not killed ({code}): {kill_points(lines)}"
            )
            if converge == "sync":
                lab.sync(tmp_path, *(guide_xml() for _ in running))
                lab.assert_converged(stopped)
            else:
                lab.watcher_pass()
                durable = any(p.startswith("rename -> intents/") and p.endswith(".json") for _, p in points[: k - 1])
                # a stop killed before its intent is on disk changed nothing, and nothing but
                # libvirt knows the domain stopped: libvirt's release (or sync) tells us
                lab.assert_converged(stopped if durable or scenario != "hook-stopped" else ())


def test_the_run_dir_full_at_any_write_then_the_next_pass_converges(lab: CrashLab, tmp_path: Path) -> None:
    """ENOSPC at each write of a file under the run dir (as a full /run gives it), at a start."""
    argv, run_dir = hook_argv("web1", "started"), str(lab.root / "run")
    for _ in range(2):
        lab.reset()
        _, lines = lab.traced(argv, xml=guide_xml())
    main = lines[0].split()[0]
    writes = [line for line in lines if line.split()[0] == main and line.split(None, 1)[1].startswith("write(")]
    points = [(n, w) for n, w in enumerate(writes, start=1) if f"<{run_dir}/" in w]
    assert len(points) >= 4, writes
    for converge in ("sync", "watcher"):
        for n, write in points:
            print(f"ENOSPC at {write.split(',')[0]}, then the next {converge}")
            lab.reset()
            code, _ = lab.traced(argv, inject=f"write:error=ENOSPC:when={n}", xml=guide_xml())
            assert code == 0  # on_error: allow
            if converge == "sync":
                lab.sync(tmp_path, guide_xml())
            else:
                lab.watcher_pass()
            lab.assert_converged(())
