"""install.sh as an admin runs it, inside a network namespace (sysctls are per namespace).

Test namespaces reach no package index, so pip is pointed at the wheelhouse tests/run built
(PIP_NO_INDEX, PIP_FIND_LINKS: pip's own settings; install.sh is unchanged).
"""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, need_root
from tests.installed import CLI, CONFIG, HOOK, INSTALL_SH, NETWORK_HOOK, PIP_OFFLINE, PREFIX, SYSCTL
from tests.names import unique
from tests.netns.conftest import port_forward, portfwd_metadata
from tests.netns.fakehost import domain_xml

pytestmark = pytest.mark.netns


@pytest.fixture
def ns() -> Iterator[str]:
    need_root()
    if HOOK.exists() or PREFIX.exists():
        pytest.fail(f"libvirt-portfwd is already installed on this machine ({HOOK}, {PREFIX}): uninstall it first")
    name = unique("pfi")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "exec", name, str(INSTALL_SH), "--uninstall"], capture_output=True)
        CONFIG.unlink(missing_ok=True)
        subprocess.run(["ip", "netns", "del", name], check=False)


def install(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **PIP_OFFLINE}
    return subprocess.run(
        ["ip", "netns", "exec", ns, str(INSTALL_SH), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def sysctl(ns: str | None) -> str:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    return subprocess.run(
        [*prefix, "sysctl", "-n", "net.ipv4.ip_forward"], capture_output=True, text=True
    ).stdout.strip()


def test_install_is_idempotent_and_uninstall_removes_everything(ns: str, tmp_path: Path) -> None:
    root_forwarding = sysctl(None)
    first = install(ns)
    assert first.returncode == 0, first.stderr
    assert HOOK.read_text().startswith(f"#!{PREFIX}/venv/bin/python3 -I\n")
    assert f"CONFIG = '{CONFIG}'" in HOOK.read_text()
    assert NETWORK_HOOK.read_text().startswith(f"#!{PREFIX}/venv/bin/python3 -I\n") and os.access(NETWORK_HOOK, os.X_OK)
    assert os.access(HOOK, os.X_OK) and CONFIG.is_file() and SYSCTL.is_file() and CLI.is_symlink()
    assert sysctl(ns) == "1" and sysctl(None) == root_forwarding  # only the namespace changed

    # the installed hook, as libvirt runs it: nothing to do, nothing printed
    env = ["env", "-i", "PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=/root"]
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, *env, str(HOOK), "web1", "migrate", "begin", "-"],
        input="<domain/>",
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""

    # every template is installed (the installed package renders from these, not the checkout)
    installed = PREFIX / "venv" / "share" / "libvirt-portfwd" / "templates"
    assert sorted(p.name for p in installed.iterdir()) == sorted(p.name for p in (REPO / "templates").iterdir())

    # the installed CLI finds its templates the same way the checkout does
    (tmp_path / "run/libvirt/network").mkdir(parents=True)
    (tmp_path / "run/libvirt/network/default.xml").write_text(
        "<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/>"
        "<ip address='192.168.122.1' prefix='24'><dhcp><host mac='52:54:00:aa:bb:cc' ip='192.168.122.178'/>"
        "</dhcp></ip></network>"
    )
    xml = tmp_path / "web1.xml"
    xml.write_text(
        domain_xml(
            "web1",
            "6f1d0c9a-6a3b-4c55-9a3e-2f0b6f6a1c01",
            metadata=portfwd_metadata(port_forward("tcp", [(20443, 443)], address="203.0.113.10")),
        )
    )
    proc = subprocess.run(
        [str(CLI), "--root", str(tmp_path), "--config", str(CONFIG), "plan", str(xml)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "-j DNAT --to-destination 192.168.122.178:443" in proc.stdout

    # idempotent, and an admin's edited config is kept
    CONFIG.write_text("lease_wait: 60\n")
    again = install(ns)
    assert again.returncode == 0, again.stderr
    assert CONFIG.read_text() == "lease_wait: 60\n"

    removed = install(ns, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert "kept your edited config" in removed.stdout
    assert not HOOK.exists() and not PREFIX.exists() and not SYSCTL.exists() and not CLI.exists()
    assert not NETWORK_HOOK.exists()


def test_install_never_overwrites_a_hook_it_did_not_write(ns: str) -> None:
    HOOK.parent.mkdir(parents=True, exist_ok=True)
    HOOK.write_text("#!/bin/sh\n# the admin's own hook\n")
    try:
        proc = install(ns)
        assert proc.returncode == 1
        assert f"{HOOK} exists and was not written by libvirt-portfwd" in proc.stderr
        assert HOOK.read_text() == "#!/bin/sh\n# the admin's own hook\n"
    finally:
        HOOK.unlink()
