"""A stock Debian 12 host upgraded in place to Debian 13 with a VM running behind a live forward.

The host is a box of its own (tests/lab/box.py): Debian 12 as shipped (libvirt 9.0, Python
3.11), booted with systemd, libvirt-portfwd installed by install.sh. The upgrade is the one an
admin does: the apt sources switched from bookworm to trixie, ``apt-get update``, ``apt-get
full-upgrade`` non-interactive, keeping changed config files (``--force-confold``). apt runs in
the box's mount, PID and IPC namespaces with the machine's network (LAB-NOTES: the box's own
processes stay in its private network), so its maintainer scripts talk to the box's systemd:
libvirtd restarts during the upgrade, and libvirt runs our ``reconnect`` hook for the VM.

The kernel keeps the old rules through all of this, so an answering forward proves nothing.
What must hold afterwards: the VM still runs (libvirt kills a VM whose reconnect hook fails),
libvirtd logged our reconnect with exit 0 and the journal has our line of it; then, with no
repair (the hooks run Debian's own python3 and python3-* packages, which the upgrade brought
along), a stop and start of that VM and a new VM each get live forwards; and after the
README's repair step (install.sh again) once more.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import scenario
from tests.e2e.conftest import Labs, own_portfwd_lab
from tests.e2e.portfwd_lab import SRC, PortfwdLab, install_sh
from tests.e2e.ruleset import uuids
from tests.e2e.scenario import (
    GONE_TIMEOUT,
    LEASE_TIMEOUT,
    define_forwarded,
    note,
    start,
    wait_until,
)
from tests.lab.host import Guest

pytestmark = pytest.mark.e2e

UPGRADE_TIMEOUT = 1800.0
SOURCES = Path("/etc/apt/sources.list")  # as mmdebstrap writes it (one line: the machine's mirror)
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "APT_LISTCHANGES_FRONTEND": "none"}
APT_OPTIONS = ("-y", "-q", "-o", "Dpkg::Options::=--force-confold", "-o", "Dpkg::Options::=--force-confdef")
PORTS = {"web1": (8080, 8353), "web2": (8081, 8354)}  # TCP -> 80, UDP -> 5353


@pytest.fixture(scope="module")
def box_lab(labs: Labs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortfwdLab]:
    """A Debian 12 host of its own (libvirt 9.0: iptables), libvirt-portfwd installed."""
    with own_portfwd_lab(labs, tmp_path_factory.mktemp("upgrade"), "bookworm") as lab:
        yield lab


def define(lab: PortfwdLab, name: str) -> Guest:
    return define_forwarded(lab, name, *PORTS[name])


def wait_forwards(lab: PortfwdLab, guest: Guest, timeout: float = LEASE_TIMEOUT) -> float:
    return scenario.wait_forwards(lab, guest, *PORTS[guest.name], timeout)


def versions(lab: PortfwdLab) -> dict[str, str]:
    query = ["dpkg-query", "-W", "-f=${Package} ${Version}\\n", "libvirt-daemon", "python3", "base-files"]
    listing = lab.run_in_host(query).stdout
    return dict(line.split(" ", 1) for line in listing.splitlines() if " " in line)


def apt(lab: PortfwdLab, *args: str) -> None:
    """apt-get in the box, with the machine's network; fails the test with apt's output."""
    result = lab.box.run(["apt-get", *args], network=False, check=False, timeout=UPGRADE_TIMEOUT, env=APT_ENV)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"apt-get {' '.join(args)}: exit {result.returncode}\n{output}"


def restart(lab: PortfwdLab, guest: Guest, what: str) -> None:
    """A stop (its rules go) and a start (live again) of a VM."""
    lab.shutdown(guest.name)
    wait_until(lambda: guest.uuid not in uuids(lab.our_rules()), GONE_TIMEOUT, f"{guest.name}'s rules to go")
    start(lab, guest)
    note(lab, f"{what}: {guest.name} restarted -> forwards answer", wait_forwards(lab, guest))


def test_upgrade_from_debian12_to_13_keeps_the_running_vm_and_its_forwards(box_lab: PortfwdLab) -> None:
    lab = box_lab
    web1 = define(lab, "web1")
    start(lab, web1)
    wait_forwards(lab, web1)
    before = versions(lab)
    assert before["base-files"].startswith("12"), before
    domain_id = lab.virsh("domid", "web1").stdout.strip()
    runs, cursor = len(lab.hook_runs()), lab.journal_cursor()

    sources = lab.path(SOURCES)
    sources.write_text(sources.read_text().replace("bookworm", "trixie"))
    lab.path("/etc/resolv.conf").write_text(Path("/etc/resolv.conf").read_text())  # the host's resolver
    began = time.monotonic()
    apt(lab, "update", "-q")
    apt(lab, "full-upgrade", *APT_OPTIONS)
    note(lab, "upgrade: apt-get update + full-upgrade", time.monotonic() - began)
    after = versions(lab)
    print(f"upgraded: {before} -> {after}")
    assert after["base-files"].startswith("13") and after["libvirt-daemon"].startswith("11."), after

    # The VM survived libvirtd's restart: our reconnect ran and exited 0.
    lab.wait_for_libvirtd()
    assert lab.domain_state("web1") == "running"
    assert lab.virsh("domid", "web1").stdout.strip() == domain_id, "web1 was restarted"
    reconnects = [run for run in lab.hook_runs()[runs:] if (run.domain, run.operation) == ("web1", "reconnect")]
    assert reconnects and all(run.status == 0 for run in reconnects), reconnects
    print(f"reconnect runs during the upgrade: {reconnects}")
    journal = lab.our_journal(after=cursor)
    # the hook's line, and the watcher's when it held the lock first and carried the change out
    assert any(line.startswith("web1: reconnect: ") for line in journal), journal
    failed = lab.box.journal("-o", "cat", "-u", "libvirtd.service", "--grep", "[Hh]ook")
    assert "libvirt-portfwd" not in failed, failed
    wait_forwards(lab, web1, 10.0)

    # No repair: the hooks run Debian's python3 3.13 with the upgraded python3-* packages.
    restart(lab, web1, "upgraded, no repair")
    web2 = define(lab, "web2")
    start(lab, web2)
    note(lab, "upgraded, no repair: new VM -> forwards answer", wait_forwards(lab, web2))

    # The README's repair step after a distribution upgrade: install.sh again.
    repaired = lab.run_in_host(install_sh(), cwd=SRC, timeout=600, check=False, env=APT_ENV)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "(Python 3.13)" in repaired.stdout, repaired.stdout
    restart(lab, web1, "repaired")
    restart(lab, web2, "repaired")
