"""install.sh as an admin runs it, inside a sandbox (tests/sandbox.py: private /etc, /opt,
/usr/local, /var/lib and /run over the machine's) in a network namespace (sysctls are per
namespace). An installation of ours on the machine itself is neither seen nor touched."""

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, need_root
from tests.installed import (
    CLI,
    CONFIG,
    CURRENT,
    HOOK,
    HOOK_ENV,
    INSTALL_SH,
    INSTALLED_PATHS,
    NETWORK_HOOK,
    PREFIX,
    RELEASES,
    SOURCES,
    SYSCTL,
)
from tests.names import unique
from tests.netns.conftest import port_forward, portfwd_metadata
from tests.netns.fakehost import domain_xml
from tests.sandbox import Sandbox

pytestmark = pytest.mark.netns


def machine_state() -> dict[str, float | None]:
    """Our install paths on the machine itself (mtime or None): the sandbox must not change them."""
    return {str(p): (p.lstat().st_mtime if os.path.lexists(p) else None) for p in INSTALLED_PATHS}


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    need_root()
    before = machine_state()
    name = unique("pfi")
    subprocess.run(["ip", "netns", "add", name], check=True)
    sandbox = Sandbox(tmp_path / "sandbox", name)
    try:
        yield sandbox
    finally:
        sandbox.close()
        subprocess.run(["ip", "netns", "del", name], check=False)
        assert machine_state() == before


def in_place(box: Sandbox) -> dict[str, float | None]:
    """The install paths in the sandbox (mtime, or None where absent)."""
    return {str(p): (box.path(p).lstat().st_mtime if os.path.lexists(box.path(p)) else None) for p in INSTALLED_PATHS}


def install(box: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return box.run(str(INSTALL_SH), *args, timeout=600)


def test_install_is_idempotent_and_uninstall_removes_everything(box: Sandbox, tmp_path: Path) -> None:
    root_forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    first = install(box)
    assert first.returncode == 0, first.stdout + first.stderr
    hook, network_hook = box.path(HOOK), box.path(NETWORK_HOOK)
    for path, kind in ((hook, "qemu"), (network_hook, "network")):
        text = path.read_text()
        assert text.startswith("#!/bin/sh\n# managed-by: libvirt-portfwd") and os.access(path, os.X_OK)
        assert f"KIND={kind}\n" in text and f"BOOT={CURRENT}/hooks/boot.py\n" in text and f"CONFIG={CONFIG}\n" in text
        assert not re.search(r"@[A-Z_]+@", text)  # every placeholder filled
    assert box.path(CONFIG).is_file() and box.path(SYSCTL).is_file() and os.access(box.path(CLI), os.X_OK)
    sysctl = box.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()
    assert sysctl == "1" and Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == root_forwarding
    release = os.readlink(box.path(CURRENT))
    assert release.startswith("releases/") and not box.path(PREFIX / "venv").exists()

    # the installed hook, as libvirt runs it: nothing to do, nothing printed
    proc = box.run(*HOOK_ENV, str(HOOK), "web1", "migrate", "begin", "-", input="<domain/>", timeout=10)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")

    # every template is installed, and the installed CLI renders from them
    templates = sorted(p.name for p in box.path(CURRENT / "templates").iterdir())
    assert templates == sorted(p.name for p in (REPO / "templates").iterdir())
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
    proc = box.run(str(CLI), "--root", str(tmp_path), "plan", str(xml), timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "-j DNAT --to-destination 192.168.122.178:443" in proc.stdout

    # idempotent: each run a new release beside the previous one (kept for hooks still running
    # it), older ones pruned; an admin's edited config is kept
    box.path(CONFIG).write_text("lease_wait: 60\n")
    for _ in range(2):
        again = install(box)
        assert again.returncode == 0, again.stdout + again.stderr
    assert box.path(CONFIG).read_text() == "lease_wait: 60\n"
    releases = sorted(p.name for p in box.path(RELEASES).iterdir())
    assert len(releases) == 2 and f"releases/{releases[-1]}" == os.readlink(box.path(CURRENT)), releases
    assert release not in [f"releases/{r}" for r in releases]

    removed = install(box, "--uninstall")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert "kept your edited config" in removed.stdout
    for path in (HOOK, NETWORK_HOOK, PREFIX, SYSCTL, CLI):
        assert not os.path.lexists(box.path(path)), path


def test_install_never_overwrites_a_hook_it_did_not_write(box: Sandbox) -> None:
    hook = box.path(HOOK)
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text("#!/bin/sh\n# the admin's own hook\n")
    proc = install(box)
    assert proc.returncode == 1
    assert f"{HOOK} exists and was not written by libvirt-portfwd" in proc.stderr
    assert hook.read_text() == "#!/bin/sh\n# the admin's own hook\n"


def test_a_release_that_cannot_run_is_never_switched_to(box: Sandbox, tmp_path: Path) -> None:
    """install.sh checks a new release with the interpreter it will run under before the switch."""
    assert install(box).returncode == 0
    good = os.readlink(box.path(CURRENT))
    broken = tmp_path / "checkout"
    broken.mkdir()
    subprocess.run(["cp", "-a", *(str(REPO / s) for s in SOURCES), str(broken)], check=True)
    (broken / "libvirt_portfwd" / "plan.py").write_text("def broken(:\n")
    proc = box.run(str(broken / "install.sh"), timeout=600)
    assert proc.returncode == 1 and "the new release does not run here" in proc.stderr, proc.stdout + proc.stderr
    assert os.readlink(box.path(CURRENT)) == good and not list(box.path(RELEASES).glob("*.partial"))


def test_stage_builds_the_runtime_only_where_it_is_told(box: Sandbox, tmp_path: Path) -> None:
    """``--stage`` (bench/): the release, config, hooks and CLI, in the four places named."""
    real_places = in_place(box)
    refused = box.run(str(INSTALL_SH), "--stage")
    assert refused.returncode == 1 and "set LIBVIRT_PORTFWD_PREFIX" in refused.stderr
    where = tmp_path / "staged"
    env = {
        **os.environ,
        "LIBVIRT_PORTFWD_PREFIX": str(where / "opt"),
        "LIBVIRT_PORTFWD_CONFIG": str(where / "config.yaml"),
        "LIBVIRT_HOOKS_DIR": str(where / "hooks"),
        "LIBVIRT_PORTFWD_CLI": str(where / "cli"),
    }
    staged = box.run(str(INSTALL_SH), "--stage", env=env)
    assert staged.returncode == 0, staged.stdout + staged.stderr
    assert (where / "opt/current/hooks/boot.py").is_file() and (where / "config.yaml").is_file()
    hook = (where / "hooks/qemu.d/libvirt-portfwd").read_text()
    assert f"BOOT={where}/opt/current/hooks/boot.py\n" in hook and f"CONFIG={where}/config.yaml\n" in hook
    proc = box.run(str(where / "cli"), "--help")
    assert proc.returncode == 0 and "plan" in proc.stdout
    assert in_place(box) == real_places  # the real places as they were (an installation too)
