"""The lab host's file system: a cached Debian root (tests/lab/rootfs.py) in private namespaces.

``HostRoot`` mounts a private overlay of the read-only root (the lab's changes go to its own
upper directory, thrown away at the end) with its own /proc, /sys, /dev, /run and /tmp, inside
the lab host's network namespace and a mount namespace of its own (tests/lab/root_holder.sh).
Commands run there with ``nsenter`` (mount and network namespace, chrooted): libvirtd,
virsh, install.sh, our hook and CLI all see the root's /etc, /opt, /usr/local, /var/lib/libvirt
and /run, never the machine's. The test process reads and writes the root's files through
``/proc/PID/root`` of the holder process (``HostRoot.path``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .proc import LabError, command_env, process_name, run
from .rootfs import Rootfs

HOLDER_SCRIPT = Path(__file__).with_name("root_holder.sh")
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Bind:
    """A bind mount into the root, at the same path as outside (so paths need no translation)."""

    path: Path
    read_only: bool = True


class Inside:
    """Commands and paths inside a running root (HostRoot, or a booted tests.lab.box.Box), from
    its ``argv`` and the ``pid`` whose namespaces they enter."""

    pid: int | None

    def argv(
        self, argv: Sequence[str], cwd: str | os.PathLike[str] | None = None, *, network: bool = True
    ) -> list[str]:
        raise NotImplementedError

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        network: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside (LC_ALL=C, the system PATH plus env; without network: in the
        machine's network namespace)."""
        inside = self.argv(argv, cwd, network=network)
        return run(inside, check=check, timeout=timeout, input=input, env=command_env(env))

    def path(self, inside: str | os.PathLike[str]) -> Path:
        """Where a path inside is, seen from the test process (through /proc/PID/root).
        An absolute symbolic link in it resolves on the machine: check links with is_symlink()."""
        if self.pid is None:
            raise LabError("the root is not running")
        return Path(f"/proc/{self.pid}/root") / Path(inside).relative_to("/")


class HostRoot(Inside):
    """A running private root; ``start`` needs the network namespace to exist."""

    def __init__(self, rootfs: Rootfs, netns: str, scratch: Path, binds: Sequence[Bind] = ()) -> None:
        self.rootfs = rootfs
        self.netns = netns
        self.scratch = scratch  # upper, work and the mount point; removed by close
        self.binds = tuple(binds)
        self.pid: int | None = None
        self._holder: subprocess.Popen[bytes] | None = None
        self._in_use: contextlib.ExitStack | None = None

    def start(self) -> None:
        self._in_use = contextlib.ExitStack()
        self._in_use.enter_context(self.rootfs.in_use())
        upper, work, merged = (self.scratch / name for name in ("upper", "work", "root"))
        for directory in (upper, work, merged):
            directory.mkdir(parents=True, exist_ok=True)
        bind_args: list[str] = []
        for bind in self.binds:
            bind_args += [str(bind.path), str(bind.path), "ro" if bind.read_only else "rw"]
        argv = [
            "ip", "netns", "exec", self.netns,
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", str(HOLDER_SCRIPT), str(self.rootfs.path), str(upper), str(work), str(merged), *bind_args,
        ]  # fmt: skip
        with open(self.scratch / "holder.log", "wb") as log:
            self._holder = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=command_env()
            )
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline().split()  # "ready PID", or EOF when the script failed
        self._holder.stdout.close()
        if len(line) != 2 or line[0] != b"ready" or not line[1].isdigit():
            self._holder.wait(timeout=START_TIMEOUT)
            detail = (self.scratch / "holder.log").read_text(errors="replace").strip()
            raise LabError(f"the lab root did not come up (exit {self._holder.returncode}): {detail}")
        self.pid = int(line[1])  # the script's shell, which becomes `sleep infinity` in the root
        deadline = time.monotonic() + START_TIMEOUT
        while not self.running:  # it exec()s chroot, which exec()s sleep
            if self._holder.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"the lab root's holder {self.pid} did not become sleep: {process_name(self.pid)!r}")
            time.sleep(0.01)

    def close(self) -> None:
        """Stop the holder and remove the scratch dir (the lab kills what else ran in its namespaces)."""
        self.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def stop(self) -> None:
        """Kill the holder (the root's mounts go with the last process in its mount namespace)."""
        holder, self._holder = self._holder, None
        if self.pid is not None and self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if holder is not None:
            holder.wait(timeout=30)  # ip netns exec returns when its child, the holder, is gone
        self.pid = None
        if self._in_use is not None:
            self._in_use.close()
            self._in_use = None

    @property
    def running(self) -> bool:
        return self.pid is not None and process_name(self.pid) == "sleep"

    # --- inside -------------------------------------------------------------------------------

    def argv(
        self, argv: Sequence[str], cwd: str | os.PathLike[str] | None = None, *, network: bool = True
    ) -> list[str]:
        """argv run inside the root: its mount (and network) namespace, chrooted, in cwd (default /)."""
        if self.pid is None:
            raise LabError("the lab root is not running")
        chdir = ["env", "-C", str(cwd)] if cwd is not None else []  # nsenter's --wd resolves outside
        return ["nsenter", "-t", str(self.pid), "-m", *(["-n"] if network else []), "-r", "-w", "--", *chdir, *argv]
