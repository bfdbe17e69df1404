"""Subprocesses: argv lists (never a shell), a timeout, LC_ALL=C, errors that carry argv and stderr."""

import os
import subprocess
import time

from . import deadline
from .errors import FirewallError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

ENV = {"LC_ALL": "C", "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"}
# Where a command may run inside this process instead (the service: libnft.run); None: processes.
in_process: "Callable[[list[str], str | None], tuple[int, str, str] | None] | None" = None


def on_path(command: str) -> bool:
    """Whether ``command`` is an executable on the PATH our commands run with."""
    return any(os.access(os.path.join(d, command), os.X_OK) for d in ENV["PATH"].split(":") if d)


def run(argv: list[str], stdin: str | None = None, timeout: float = 30.0) -> str:
    """Run ``argv``; return stdout or raise FirewallError with the exit code and stderr.

    The timeout is cut to what is left of the hook's time bound (deadline.py): a firewall tool
    that hangs, or waits for the xtables lock another program holds, is killed then."""
    timeout = _bounded(argv, timeout)
    done = in_process(argv, stdin) if in_process else None
    if done is not None:
        if done[0] != 0:
            raise FirewallError(argv, done[0], done[2])
        return done[1]
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, env=ENV, check=False)
    except FileNotFoundError:
        raise FirewallError(argv, 127, f"{argv[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise FirewallError(argv, -1, f"timed out after {timeout:.1f} s") from None
    if proc.returncode != 0:
        raise FirewallError(argv, proc.returncode, proc.stderr)
    return proc.stdout


def run_all(argvs: list[list[str]], timeout: float = 30.0) -> list[tuple[int, str, str]]:
    """Run read-only commands side by side; (exit code, stdout, stderr) for each, in order."""
    timeout = _bounded(argvs[0] if argvs else ["-"], timeout)
    procs: list[subprocess.Popen[str] | None] = []
    done = [in_process(argv, None) if in_process else None for argv in argvs]
    if all(d is not None for d in done):
        return [d for d in done if d is not None]
    for argv in argvs:
        try:
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV))
        except FileNotFoundError:
            procs.append(None)
    results = []
    until = time.monotonic() + timeout
    for argv, proc in zip(argvs, procs, strict=True):
        if proc is None:
            results.append((127, "", f"{argv[0]}: command not found"))
            continue
        try:
            out, err = proc.communicate(timeout=max(0.0, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results.append((proc.returncode, out, err))
    return results


def _bounded(argv: list[str], timeout: float) -> float:
    left = deadline.remaining(timeout)
    if left <= 0:
        raise FirewallError(argv, -1, "not run: the hook's time bound is spent")
    return left
