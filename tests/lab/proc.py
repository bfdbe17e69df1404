"""Process helpers for the lab: commands (argv lists, a timeout, LC_ALL=C, errors that carry
detail), daemons started with a pidfile, and network namespaces."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

LOG = logging.getLogger("libvirt_portfwd.lab")
DEFAULT_TIMEOUT = 60.0
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LabError(Exception):
    """A lab step failed; the message says which and why."""


class CommandError(LabError):
    """A command exited non-zero or timed out."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exit {returncode}"
        detail = stderr.strip() or stdout.strip()
        super().__init__(f"{' '.join(self.argv)}: {status}" + (f": {detail}" if detail else ""))


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal, predictable environment for lab commands."""
    env = {"PATH": SYSTEM_PATH, "LC_ALL": "C", "HOME": "/root"}
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv and capture text output; raise CommandError on failure when check is true."""
    try:
        result = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else command_env(),
            cwd=cwd,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, None, _text(exc.stdout), _text(exc.stderr)) from exc
    if check and result.returncode != 0:
        raise CommandError(argv, result.returncode, result.stdout, result.stderr)
    return result


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data


# --- daemons and namespaces ---------------------------------------------------------------------


def socket_answers(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def stop_daemon(pidfile: Path, comm: str, timeout: float = 20.0) -> None:
    """SIGTERM the daemon named by pidfile (only if it is comm), wait, then SIGKILL."""
    pid = signal_daemon(pidfile, comm)
    if pid is not None:
        await_daemon(pid, comm, pidfile, timeout)


def signal_daemon(pidfile: Path, comm: str) -> int | None:
    """SIGTERM the process named by pidfile if it is comm; its pid, or None if none ran."""
    pid = read_pid(pidfile)
    if pid is None or process_name(pid) != comm:
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return pid


def await_daemon(pid: int, comm: str, pidfile: Path, timeout: float = 20.0) -> None:
    """Wait for a signalled daemon to exit; SIGKILL it after timeout."""
    if not wait_for_exit(pid, comm, timeout):
        LOG.warning("%s (%d) ignored SIGTERM; killing it", comm, pid)
        os.kill(pid, signal.SIGKILL)
        if not wait_for_exit(pid, comm, 5.0):
            raise LabError(f"{comm} ({pid}) does not exit")
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()


def wait_for_exit(pid: int, comm: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_name(pid) != comm:
            return True
        time.sleep(0.05)
    return False


def namespace_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def namespace_pids(name: str) -> list[int]:
    result = run(["ip", "netns", "pids", name], check=False, timeout=10)
    return [int(pid) for pid in result.stdout.split() if pid.isdigit()]


def kill_namespace_processes(name: str) -> None:
    """Processes left in a lab namespace are the lab's (dnsmasq, qemu): TERM, then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = namespace_pids(name)
        if not pids:
            return
        LOG.warning("namespace %s: sending %s to leftover processes %s", name, sig.name, pids)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5.0
        while namespace_pids(name) and time.monotonic() < deadline:
            time.sleep(0.1)


def delete_namespaces(names: Sequence[str]) -> None:
    errors = []
    for name in names:
        if not namespace_exists(name):
            continue
        try:
            kill_namespace_processes(name)
            run(["ip", "netns", "del", name], timeout=30)
        except CommandError as exc:
            errors.append(str(exc))
    if errors:
        raise LabError("; ".join(errors))
