"""The one error boundary, per entry point, as each runs installed (hooks/boot.py): a forced bug
is one line on stderr, its traceback in the log (syslog, here a socket under the test's root),
and the documented exit code. The bug is forced by editing a copy of the code, as a real bug
would be there: the entry points run as separate processes."""

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_portfwd import policy, shim
from tests.conftest import REPO

BUG = """

def _forced_bug(*args, **kwargs):
    raise RuntimeError("forced bug for the test")


{name} = _forced_bug
"""
UUID = "6f1d0c9a-6a3b-4c55-9a3e-2f0b6f6a1c01"
XML = (
    f"<domain type='qemu'><name>web1</name><uuid>{UUID}</uuid><metadata>"
    '<portfwd:portfwd xmlns:portfwd="urn:libvirt-portfwd:1"><portfwd:portForward proto="tcp">'
    '<portfwd:range start="20443" to="443"/></portfwd:portForward></portfwd:portfwd></metadata></domain>'
)


class Host:
    """A copy of the code with one function replaced by a bug, a root, and a syslog to read."""

    def __init__(self, tmp: Path) -> None:
        self.lib, self.root = tmp / "lib", tmp / "root"
        for part in ("hooks", "libvirt_portfwd", "templates"):
            shutil.copytree(REPO / part, self.lib / part, ignore=shutil.ignore_patterns("__pycache__"))
        (self.root / "dev").mkdir(parents=True)
        self.syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.syslog.bind(str(self.root / "dev" / "log"))
        self.syslog.setblocking(False)

    def break_(self, module: str, name: str) -> None:
        with open(self.lib / "libvirt_portfwd" / module, "a") as handle:
            handle.write(BUG.format(name=name))

    def run(self, *argv: str, input: str = "", shim_kind: str = "") -> subprocess.CompletedProcess[str]:
        if shim_kind:  # the installed hook: the shim, rendered for this copy
            hook = self.lib / f"{shim_kind}.hook"
            hook.write_text(shim.render(shim_kind, "", str(self.lib)))
            hook.chmod(0o755)
            command = [str(hook), *argv]
        else:
            command = ["/usr/bin/python3", "-I", "-S", str(self.lib / "hooks" / "boot.py"), *argv]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "LIBVIRT_PORTFWD_ROOT": str(self.root)}
        return subprocess.run(command, input=input, capture_output=True, text=True, env=env, timeout=30, cwd="/")

    def logged(self) -> list[str]:
        messages = []
        while True:
            try:
                messages.append(self.syslog.recv(65536).decode())
            except BlockingIOError:
                return messages


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    host = Host(tmp_path)
    yield host
    host.syslog.close()


def assert_bug_reported(proc: subprocess.CompletedProcess[str], host: Host, code: int) -> None:
    lines = [line for line in proc.stderr.splitlines() if line]
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == "" and len(lines) == 1, proc.stderr
    assert "internal error: RuntimeError: forced bug for the test" in lines[0] and "journalctl" in lines[0]
    traces = [m for m in host.logged() if "Traceback" in m]
    assert len(traces) == 1 and "_forced_bug" in traces[0] and traces[0].startswith("<27>")  # daemon.err


@pytest.mark.parametrize(("on_error", "code"), [("allow", policy.OK), ("block", policy.BLOCKED)])
def test_hook(host: Host, on_error: str, code: int) -> None:
    """A bug at ``started``: the hook's policy decides (block refuses only a domain of ours)."""
    (host.root / "etc/libvirt-portfwd").mkdir(parents=True)
    (host.root / "etc/libvirt-portfwd/config.yaml").write_text(f"on_error: {on_error}\n")
    host.break_("intents.py", "apply")
    assert_bug_reported(host.run("web1", "started", "begin", "-", input=XML, shim_kind="qemu"), host, code)
    for operation in ("reconnect", "release"):  # never fails
        proc = host.run("web1", operation, "begin", "-", input=XML, shim_kind="qemu")
        assert proc.returncode == policy.OK, proc.stderr


def test_network_hook(host: Host) -> None:
    (host.root / "run/libvirt-portfwd").mkdir(parents=True)
    (host.root / "run/libvirt-portfwd/index.json").write_text("{}")
    host.break_("reconcile.py", "repair")
    proc = host.run("default", "started", "begin", "-", input="<network/>", shim_kind="network")
    assert_bug_reported(proc, host, policy.OK)


def test_cli(host: Host) -> None:
    host.break_("cli.py", "cmd_status")
    assert_bug_reported(host.run("cli", "--root", str(host.root), "status"), host, policy.INTERNAL)


def test_watcher(host: Host) -> None:
    host.break_("service.py", "serve")
    assert_bug_reported(host.run("cli", "--root", str(host.root), "serve"), host, policy.INTERNAL)


def test_waiter(host: Host) -> None:
    host.break_("waiter.py", "wait")
    assert_bug_reported(host.run("waiter", UUID, "0123456789abcdef"), host, policy.INTERNAL)


def test_a_known_failure_is_one_line_and_exit_1(host: Host) -> None:
    proc = host.run("cli", "--root", str(host.root), "plan", str(host.root / "missing.xml"))
    assert proc.returncode == policy.FAILED and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("libvirt-portfwd: cannot read domain XML")
    assert not [m for m in host.logged() if "Traceback" in m]


def test_a_bad_command_line_is_one_line_and_exit_2(host: Host) -> None:
    proc = host.run("cli", "frobnicate")
    assert proc.returncode == policy.USAGE and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("libvirt-portfwd: usage: libvirt-portfwd: argument COMMAND: invalid choice")


def test_the_shim_knows_the_policy_without_python() -> None:
    text = shim.render("qemu", "/etc/libvirt-portfwd/config.yaml", "/opt/libvirt-portfwd/current")
    may_fail = " ".join(op for op, (_, fails) in policy.POLICY.items() if fails)
    assert f"MAY_FAIL=' {may_fail} '" in text and f"BLOCKED={policy.BLOCKED}\n" in text
    assert f"BROKEN={policy.BROKEN}\n" in text and f"MARK='{policy.METADATA_MARK.decode()}'" in text
    assert "BOOT=/opt/libvirt-portfwd/current/hooks/boot.py\n" in text
