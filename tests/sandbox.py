"""A private copy of the machine's system directories, for tests that run install.sh.

Inside a mount namespace of its own, /etc, /opt, /usr/local and /var/lib are overlays whose
lower layer is the machine's directory and whose upper layer is a temporary directory, and /run
is an empty tmpfs: install.sh, the hooks and the CLI read the machine's files and write only
into the test's layers. The machine's own copies are never read for our paths (an installation
of ours there is not seen) and never written. One process holds the namespace; commands enter
it with nsenter, so they all see the same files (a hook may run while install.sh runs).
"""

import os
import signal
import subprocess
from pathlib import Path

OVERLAID = ("/etc", "/opt", "/usr/local", "/var/lib")

# $1: the directory of the upper layers; every path here is a constant of this module
MOUNTS = (
    "".join(
        f'mkdir -p "$1/upper{d}" "$1/work{d}"\n'
        f'mount -t overlay overlay -o "lowerdir={d},upperdir=$1/upper{d},workdir=$1/work{d}" {d}\n'
        for d in OVERLAID
    )
    + "mount -t tmpfs -o mode=0755 sandbox-run /run\n"
)


class Sandbox:
    """The private view, inside network namespace ``netns`` (None: a new one of its own);
    ``mounts``: another view (a shell script; ``$1`` is ``workdir``)."""

    def __init__(self, workdir: Path, netns: str | None = None, mounts: str = MOUNTS) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        enter = ["ip", "netns", "exec", netns] if netns else ["unshare", "--net"]
        script = f"set -eu\n{mounts}echo ready\nexec sleep infinity\n"
        self.holder = subprocess.Popen(
            [*enter, "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sandbox", str(workdir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "ready":
            self.holder.wait(timeout=10)
            raise AssertionError(f"sandbox mounts failed (exit {self.holder.returncode})")
        self.pid = self.holder.pid  # ip, unshare and sh each exec the next: one process

    def argv(self, *argv: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "-n", "--", *argv]

    def run(
        self, *argv: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*argv), input=input, capture_output=True, text=True, env=env, timeout=timeout, cwd="/"
        )

    def path(self, path: str | Path) -> Path:
        """``path`` as the sandbox sees it (through its holder's root), to read or write from here."""
        return Path(f"/proc/{self.pid}/root") / str(path).lstrip("/")

    def close(self) -> None:
        """Kill everything inside (the holder, and any waiter a hook detached), then the layers."""
        if self.holder.poll() is None:
            namespace = os.readlink(f"/proc/{self.pid}/ns/mnt")
            for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
                try:
                    if os.readlink(f"/proc/{pid}/ns/mnt") == namespace:
                        os.kill(pid, signal.SIGKILL)
                except OSError:  # gone meanwhile
                    continue
        self.holder.wait(timeout=30)
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.workdir)], check=False)
