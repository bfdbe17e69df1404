"""A stock Debian host in a box: a cached root booted with systemd as PID 1 by systemd-nspawn.

The box runs over a private overlay of the cached root (tests/lab/rootfs.py: never written; the
box's changes go to its own upper directory, which outlives a poweroff, so booting again is a
reboot of the same host), in its own PID, mount, UTS, IPC and network namespaces. Its network
namespace is new at every boot (``--private-network``: only ``lo``, as a freshly booted kernel
has), so whatever the kernel held before (bridges, taps, firewall rules, conntrack) is gone
after a reboot, as on real hardware; tests/lab/host.py links it to the client after each boot.

Inside, systemd starts what Debian's packages enabled (libvirtd, virtlogd, libvirt-guests,
journald, ...), exactly as on an installed host. Commands run in all of the box's namespaces
(``nsenter -a``), and the test process reads its files through ``/proc/PID/root``. The box's
console goes to ``console-N.log`` in its scratch directory, one file per boot.

What systemd-nspawn leaves on the machine is kept out of the way: its propagation directories
go to a tmpfs over /run in the box's private mount namespace, its cgroups (this machine mounts
cgroup v1) under a cgroup of the box's own, removed when the box stops, and its journal stays
inside (``--link-journal=no``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .hostroot import Bind, Inside
from .proc import LabError, command_env, process_name
from .rootfs import Rootfs

BOOT_SCRIPT = Path(__file__).with_name("box_boot.sh")
BOOT_TIMEOUT = 120.0
POWEROFF_TIMEOUT = 360.0  # libvirt-guests as shipped waits up to 300 s for a guest to shut down
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_HIERARCHIES = ("systemd", "unified")  # cgroup v1 (this machine): what nspawn uses


class Box(Inside):
    """A booted host; ``start`` boots it (again: a reboot), ``poweroff`` shuts it down cleanly."""

    def __init__(self, rootfs: Rootfs, name: str, scratch: Path, binds: Sequence[Bind] = ()) -> None:
        self.rootfs = rootfs
        self.name = name  # the machine name (and the cgroup's): unique per box
        self.scratch = scratch  # upper, work, the mount point and console logs; removed by close
        self.binds = tuple(binds)
        self.pid: int | None = None  # the box's systemd, PID 1 inside
        self.boots = 0
        self._nspawn: subprocess.Popen[bytes] | None = None
        self._in_use: contextlib.ExitStack | None = None

    @property
    def upper(self) -> Path:
        return self.scratch / "upper"

    @property
    def cgroup(self) -> str:
        return cgroup_name(self.name)

    def seed(self, inside: str | os.PathLike[str], text: str, mode: int = 0o644) -> None:
        """Write a file of the box before it boots (into its upper layer), e.g. a config an admin
        would have; the directories above it come from the root."""
        target = self.upper / Path(inside).relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def lower_text(self, inside: str | os.PathLike[str]) -> str:
        """A file as the cached root has it (before the box changed it)."""
        return (self.rootfs.path / Path(inside).relative_to("/")).read_text()

    # --- boot and poweroff -----------------------------------------------------------------------

    def start(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Boot, and wait until systemd has finished starting up (running or degraded)."""
        if self.running:
            raise LabError(f"box {self.name} is already running")
        if self._in_use is None:
            self._in_use = contextlib.ExitStack()
            self._in_use.enter_context(self.rootfs.in_use())
        upper, work, merged = (self.scratch / name for name in ("upper", "work", "root"))
        for directory in (upper, work, merged):
            directory.mkdir(parents=True, exist_ok=True)
        self.boots += 1
        nspawn = [
            "--quiet", "--boot", "--private-network", "--register=no", "--keep-unit",
            f"--machine={self.name}", "--timezone=off", "--resolv-conf=off", "--link-journal=no",
            "--console=read-only",
            *(f"--bind{'-ro' if bind.read_only else ''}={bind.path}" for bind in self.binds),
        ]  # fmt: skip
        argv = [
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", str(BOOT_SCRIPT), self.cgroup, str(self.rootfs.path), str(upper), str(work), str(merged), *nspawn,
        ]  # fmt: skip
        with open(self.console_log(), "wb") as log:
            self._nspawn = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=command_env(),
                start_new_session=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            self.pid = self._find_systemd(timeout)
            while (state := self._system_state()) not in ("running", "degraded"):
                if time.monotonic() > deadline or not self.running:
                    raise LabError(f"box {self.name}: systemd is {state!r} after boot: {self.console_tail()}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise

    def _system_state(self) -> str:
        """``systemctl is-system-running``: starting, running, degraded, ... ("" before its bus is up)."""
        return self.run(["systemctl", "is-system-running"], check=False, timeout=30).stdout.strip()

    def _find_systemd(self, timeout: float) -> int:
        """The box's PID 1: the descendant of systemd-nspawn named systemd."""
        assert self._nspawn is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._nspawn.poll() is not None:
                raise LabError(f"box {self.name} did not boot (exit {self._nspawn.returncode}): {self.console_tail()}")
            for pid in descendants(self._nspawn.pid):
                if process_name(pid) == "systemd":
                    return pid
            time.sleep(0.05)
        raise LabError(f"box {self.name}: no systemd within {timeout:.0f} s: {self.console_tail()}")

    def poweroff(self, timeout: float = POWEROFF_TIMEOUT) -> float:
        """``systemctl poweroff`` inside, as an admin shuts a host down (units stop in order:
        libvirt-guests, libvirtd, ...); returns the seconds until the box was gone."""
        if not self.running:
            raise LabError(f"box {self.name} is not running")
        began = time.monotonic()
        self.run(["systemctl", "poweroff"], check=False, timeout=30)
        assert self._nspawn is not None
        try:
            self._nspawn.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LabError(f"box {self.name} did not power off within {timeout:.0f} s: {self.console_tail()}") from None
        self._gone()
        return time.monotonic() - began

    def stop(self) -> None:
        """Kill the box at once (PID 1 of its namespace: everything in it goes too)."""
        if self.pid is not None and process_name(self.pid) == "systemd":
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self._nspawn is not None and self._nspawn.poll() is None:
            try:
                self._nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._nspawn.kill()
                self._nspawn.wait(timeout=30)
        self._gone()

    def _gone(self) -> None:
        self.pid = None
        self._nspawn = None
        remove_cgroups(self.name)

    def close(self) -> None:
        """Stop the box, release the root and remove the scratch directory."""
        self.stop()
        if self._in_use is not None:
            self._in_use.close()
            self._in_use = None
        shutil.rmtree(self.scratch, ignore_errors=True)

    @property
    def running(self) -> bool:
        return (
            self.pid is not None
            and self._nspawn is not None
            and self._nspawn.poll() is None
            and process_name(self.pid) == "systemd"
        )

    def console_log(self) -> Path:
        return self.scratch / f"console-{self.boots}.log"

    def console_tail(self, chars: int = 3000) -> str:
        try:
            return self.console_log().read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # --- inside ----------------------------------------------------------------------------------

    def argv(
        self, argv: Sequence[str], cwd: str | os.PathLike[str] | None = None, *, network: bool = True
    ) -> list[str]:
        """argv run inside the box: every namespace of its PID 1, in cwd (default /). Without
        network: the machine's network namespace (LAB-NOTES: how apt reaches the mirror while
        the box's own processes stay in its private network)."""
        if self.pid is None:
            raise LabError(f"box {self.name} is not running")
        chdir = ["env", "-C", str(cwd)] if cwd is not None else []
        namespaces = ["-a"] if network else ["-m", "-u", "-i", "-p", "-C"]
        return ["nsenter", "-t", str(self.pid), *namespaces, "--", *chdir, *argv]

    def systemctl(self, *args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", *args], check=check, timeout=timeout)

    def journal(self, *args: str) -> str:
        """``journalctl --no-pager -o cat ARGS`` inside (e.g. ``-t libvirt-portfwd``, ``-b``)."""
        return self.run(["journalctl", "--no-pager", *args], check=False, timeout=60).stdout


def descendants(pid: int) -> list[int]:
    """Every process below pid, breadth first."""
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop(0)
        try:
            tasks = Path(f"/proc/{parent}/task").iterdir()
            children = [int(child) for task in tasks for child in (task / "children").read_text().split()]
        except OSError:
            continue
        found += children
        queue += children
    return found


def cgroup_name(box: str) -> str:
    return f"libvirt-portfwd-box-{box}"


def remove_cgroups(box: str) -> None:
    """Remove the box's cgroup (box_boot.sh made it) under each hierarchy, once its processes are gone."""
    v2 = (CGROUP_ROOT / "cgroup.controllers").exists()
    for hierarchy in (CGROUP_ROOT,) if v2 else tuple(CGROUP_ROOT / name for name in CGROUP_HIERARCHIES):
        remove_cgroup(hierarchy / cgroup_name(box))


def remove_cgroup(path: Path) -> None:
    """Remove a cgroup directory and those below it (empty once their processes are gone)."""
    if not path.is_dir():
        return
    for directory in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()
    deadline = time.monotonic() + 10.0
    while path.exists():
        try:
            path.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                raise LabError(f"cgroup {path} is still in use") from None
            time.sleep(0.1)
