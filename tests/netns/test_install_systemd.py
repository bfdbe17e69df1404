"""install.sh where systemd runs: a real systemd as PID 1 of a container made of namespaces.

These machines run no systemd, so the test boots one: new PID, mount, network, cgroup, UTS and
IPC namespaces, the private system directories of tests/sandbox.py (overlays of /etc, /opt,
/usr/local and /var/lib, a tmpfs over /run: systemd's /run/systemd/system is what install.sh
looks for), and a unit path of an empty target plus /etc/systemd/system, where install.sh
writes its units (and empty stand-ins for the targets services depend on: nothing of the
machine's own configuration starts). install.sh then runs inside it (nsenter) as an admin runs
it; the watcher must be enabled and running, the boot-time sync enabled, and ``--uninstall``
must stop and remove both. On a broken runtime the watcher says so once and stays down.
"""

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need_root
from tests.installed import CONFIG, CURRENT, INSTALL_SH, UNIT_DIR
from tests.installed import UNITS as UNIT_PATHS
from tests.sandbox import MOUNTS

pytestmark = pytest.mark.netns

SYSTEMD = Path("/lib/systemd/systemd")
CGROUP_ROOT = Path("/sys/fs/cgroup")
UNITS = tuple(unit.name for unit in UNIT_PATHS)
TARGETS = (
    "lab.target",
    "sysinit.target",
    "basic.target",
    "shutdown.target",
    "multi-user.target",
    "network-online.target",
)
# $1: the sandbox's layers, $2: the unit path of empty targets, $3: systemd
BOOT = (
    f"set -eu\n{MOUNTS}exec env -i container=libvirt-portfwd-test "
    'SYSTEMD_UNIT_PATH="$2:/etc/systemd/system" "$3" --unit=lab.target --log-target=console'
)


class Container:
    """systemd as PID 1 in its own namespaces; commands run inside with nsenter."""

    def __init__(self, units: Path, log: Path, layers: Path) -> None:
        units.mkdir()
        for target in TARGETS:  # what services depend on by default, empty: nothing else starts
            (units / target).write_text(f"[Unit]\nDescription={target} (libvirt-portfwd test container)\n")
        self.log = log
        self.cgroups_before = cgroup_dirs()
        with open(log, "wb") as out:
            self.unshare = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--mount", "--mount-proc", "--cgroup", "--net", "--uts", "--ipc",
                 "--propagation", "private", "sh", "-c", BOOT, "container", str(layers), str(units), str(SYSTEMD)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.pid = self._systemd_pid()

    def _systemd_pid(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        children = Path(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children")
        while time.monotonic() < deadline:
            for pid in children.read_text().split() if children.exists() else []:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
            time.sleep(0.05)
        raise AssertionError(f"systemd did not start: {self.log.read_text()[-2000:]}")

    def run(
        self, *argv: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-p", "-n", "-u", "-i", *argv],
            capture_output=True, text=True, env=env, timeout=timeout, check=False,
        )  # fmt: skip

    def path(self, path: Path) -> Path:
        """``path`` as the container sees it (its overlays), from here."""
        return Path(f"/proc/{self.pid}/root") / str(path).lstrip("/")

    def read(self, path: Path) -> str:
        return self.path(path).read_text()

    def wait_running(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while (state := self.run("systemctl", "is-system-running").stdout.strip()) not in ("running", "degraded"):
            if time.monotonic() > deadline:
                raise AssertionError(f"systemd is {state!r} after {timeout} s: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        os.kill(self.pid, 9)  # PID 1 of its namespace: everything in it goes too
        self.unshare.wait(timeout=30)
        for path in sorted(cgroup_dirs() - self.cgroups_before, reverse=True):  # the cgroups it made, now empty
            with contextlib.suppress(OSError):
                path.rmdir()


def cgroup_dirs() -> set[Path]:
    return {path for path in CGROUP_ROOT.glob("*/**/") if path.is_dir()}


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    need_root()
    if not SYSTEMD.exists():
        pytest.fail(f"{SYSTEMD} is missing (tests/run installs the systemd package)", pytrace=False)
    box = Container(tmp_path / "units", tmp_path / "systemd.log", tmp_path / "layers")
    try:
        box.wait_running()
        yield box
    finally:
        box.stop()
        subprocess.run(["rm", "-rf", "--one-file-system", str(tmp_path / "layers")], check=False)


def test_install_enables_and_starts_the_watcher_where_systemd_runs(container: Container) -> None:
    installed = container.run(str(INSTALL_SH), env=dict(os.environ), timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert f"services enabled: {' '.join(UNITS)}" in installed.stdout

    for unit in UNITS:
        assert container.run("systemctl", "is-enabled", unit).stdout.strip() == "enabled", unit
        text = container.read(UNIT_DIR / unit)
        assert f"ExecStart=/usr/bin/python3 -I -S {CURRENT}/hooks/boot.py cli --config {CONFIG} " in text
        assert "@" not in text
    show = container.run("systemctl", "show", "-p", "ActiveState,SubState,MainPID", UNITS[0]).stdout
    assert "ActiveState=active" in show and "SubState=running" in show, show + container.log.read_text()[-2000:]
    main_pid = show.split("MainPID=")[1].split()[0]
    deadline = time.monotonic() + 10.0
    while not container.run("pgrep", "-P", main_pid, "-f", "^nft monitor").stdout.split():
        assert time.monotonic() < deadline, f"the watcher runs no `nft monitor`: {container.run('ps', 'axf').stdout}"
        time.sleep(0.1)
    verify = container.run("systemd-analyze", "verify", *(str(UNIT_DIR / unit) for unit in UNITS))
    assert not [line for line in verify.stderr.splitlines() if "libvirt-portfwd" in line], verify.stderr

    removed = container.run(str(INSTALL_SH), "--uninstall", timeout=120)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert container.run("systemctl", "is-active", UNITS[0]).stdout.strip() in ("inactive", "unknown")
    unit_dir = container.path(UNIT_DIR)
    assert not any((unit_dir / unit).exists() for unit in UNITS)
    assert not list(unit_dir.glob(f"*.wants/{UNITS[0]}")) and not list(unit_dir.glob(f"*.wants/{UNITS[1]}"))


def test_the_watcher_on_a_broken_runtime_says_so_once_and_stays_down(container: Container) -> None:
    installed = container.run(str(INSTALL_SH), env=dict(os.environ), timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert container.run("rm", "-rf", str(CURRENT / "libvirt_portfwd")).returncode == 0
    container.run("systemctl", "restart", UNITS[0])
    time.sleep(12)  # RestartSec=5: a restart loop would have restarted it twice by now
    show = container.run("systemctl", "show", "-p", "NRestarts,ActiveState,ExecMainStatus", UNITS[0]).stdout
    # it ran once on the broken runtime (each run says so in one line: tests/netns/test_failsafe.py)
    # and exited BROKEN, which the unit does not restart
    assert "NRestarts=0" in show and "ExecMainStatus=4" in show and "ActiveState=failed" in show, show

    repaired = container.run(str(INSTALL_SH), env=dict(os.environ), timeout=600)  # the repair
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert container.run("systemctl", "is-active", UNITS[0]).stdout.strip() == "active"


def test_install_replaces_the_service_of_an_older_release(container: Container) -> None:
    """Before issue 14 the service was libvirt-portfwd-watch.service: an upgrade stops, disables and
    removes it (ours: it carries install.sh's marker), and starts libvirt-portfwd.service instead."""
    old = "libvirt-portfwd-watch.service"
    unit = container.path(UNIT_DIR / old)
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(
        "# managed-by: libvirt-portfwd\n[Service]\nExecStart=/bin/sleep infinity\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    container.run("systemctl", "daemon-reload")
    assert container.run("systemctl", "enable", "--now", old).returncode == 0
    assert container.run("systemctl", "is-active", old).stdout.strip() == "active"

    installed = container.run(str(INSTALL_SH), env=dict(os.environ), timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert not unit.exists() and not list(container.path(UNIT_DIR).glob(f"*.wants/{old}"))
    assert container.run("systemctl", "is-active", old).stdout.strip() in ("inactive", "unknown")
    assert container.run("systemctl", "is-active", UNITS[0]).stdout.strip() == "active"
