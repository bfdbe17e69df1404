"""A stock Debian 13 host rebooted: forwards come back with the VMs, and only with them.

The host is a box of its own (tests/lab/box.py), booted with systemd, libvirt-portfwd installed
by install.sh; a reboot is ``systemctl poweroff`` inside, then the same root booted again: a
new kernel network namespace (no rules, no bridge), the same disk. Nobody types anything after
the boot: systemd starts libvirtd (which autostarts its network and the autostart VMs),
libvirt-guests, and our units (the boot sync, the watcher).

Three VMs with forwards: ``auto1`` (autostart, running), ``late1`` (autostart, never started
before: no lease at boot, so its forward waits for one), ``hand1`` (started by hand).

1. libvirt-guests as Debian ships it (``ON_SHUTDOWN=shutdown``, ``ON_BOOT=ignore``): at poweroff
   the running VMs are shut down; at boot the autostart VMs start fresh. After boot: auto1 and
   late1 (once its lease appears) answer through their forwards; hand1 does not run, and
   nothing of it is left (no rule, no record, no status row).
2. libvirt-guests set by the admin to save and restore (``ON_SHUTDOWN=suspend``,
   ``ON_BOOT=start``, both documented in /etc/default/libvirt-guests): hand1 started by hand
   again; at poweroff all three are saved; at boot libvirtd restores the autostart ones and
   libvirt-guests hand1. After boot every one of them answers through its forwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import scenario
from tests.e2e.conftest import Labs, own_portfwd_lab
from tests.e2e.portfwd_lab import SYNC_UNIT, WATCH_UNIT, PortfwdLab
from tests.e2e.ruleset import uuids
from tests.e2e.scenario import (
    LEASE_TIMEOUT,
    define_forwarded,
    http,
    note,
    status_rows,
    udp,
    wait_until,
)
from tests.installed import RUN_DIR
from tests.lab.host import Guest

pytestmark = pytest.mark.e2e

GUESTS_DEFAULTS = Path("/etc/default/libvirt-guests")
# Each VM: (TCP host port -> 80, UDP host port -> 5353).
PORTS = {"auto1": (7080, 7353), "late1": (7081, 7354), "hand1": (7082, 7355)}


@pytest.fixture(scope="module")
def box_lab(labs: Labs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortfwdLab]:
    """A Debian 13 host of its own (libvirt's nftables backend), libvirt-portfwd installed."""
    with own_portfwd_lab(labs, tmp_path_factory.mktemp("reboot"), "trixie", "nftables") as lab:
        yield lab


def define(lab: PortfwdLab, name: str) -> Guest:
    return define_forwarded(lab, name, *PORTS[name])


def wait_forwards(lab: PortfwdLab, guest: Guest, timeout: float = LEASE_TIMEOUT) -> float:
    return scenario.wait_forwards(lab, guest, *PORTS[guest.name], timeout)


def leased_address(lab: PortfwdLab, guest: Guest) -> str:
    """The guest's current lease (after a reboot the address may be the one it had)."""
    for lease in lab.read_leases():
        if str(lease.get("mac-address", "")).lower() == guest.macs[0]:
            return str(lease["ip-address"])
    raise AssertionError(f"{guest.name}: no lease")


def assert_booted_by_itself(lab: PortfwdLab) -> None:
    """Our units ran at boot under systemd: the sync finished, the watcher runs."""
    sync = lab.unit_state(SYNC_UNIT)
    assert sync.get("Result") == "success" and sync.get("ExecMainStatus") == "0", sync
    assert lab.unit_state(WATCH_UNIT).get("ActiveState") == "active", lab.unit_state(WATCH_UNIT)
    assert any(line.startswith("sync: ") for line in lab.our_journal("-b")), lab.our_journal("-b")


def test_reboot_brings_forwards_back_with_their_vms(box_lab: PortfwdLab) -> None:
    lab = box_lab
    auto1, late1, hand1 = (define(lab, name) for name in PORTS)
    for guest in (auto1, late1):
        lab.virsh("autostart", guest.name)
    for guest in (auto1, hand1):
        lab.start_domain(guest.name)
        guest.address = lab.wait_for_lease(guest.macs[0], LEASE_TIMEOUT, domain=guest.name)
        wait_forwards(lab, guest)
    assert lab.path(GUESTS_DEFAULTS).read_text() == lab.box.lower_text(GUESTS_DEFAULTS), "as Debian ships it"

    # 1. libvirt-guests as shipped: shut down at poweroff, autostart VMs start fresh at boot
    note(lab, "reboot 1 (libvirt-guests as shipped)", lab.reboot())
    assert_booted_by_itself(lab)
    assert lab.domain_state("hand1") == "shut off"
    for guest in (auto1, late1):
        assert lab.domain_state(guest.name) == "running", guest.name
        lab.wait_for_lease(guest.macs[0], LEASE_TIMEOUT, domain=guest.name)
        guest.address = leased_address(lab, guest)
        note(lab, f"reboot 1: boot -> {guest.name} answers", wait_forwards(lab, guest))
    booted = lab.our_journal("-b")
    assert any(line.startswith("late1: waiting for a lease") for line in booted), booted  # nothing to reuse
    assert hand1.uuid not in uuids(lab.our_rules()), "rules of a VM that does not run"
    assert status_rows(lab, "hand1") == []
    assert not lab.path(RUN_DIR / "domains" / f"{hand1.uuid}.json").exists()
    assert not http(lab, PORTS["hand1"][0]).ok and not udp(lab, PORTS["hand1"][1]).ok
    assert uuids(lab.our_rules()) == {auto1.uuid, late1.uuid}

    # 2. the admin's libvirt-guests: saved at poweroff, restored at boot
    defaults = lab.path(GUESTS_DEFAULTS)
    defaults.write_text(defaults.read_text() + "\n# the admin's choice\nON_SHUTDOWN=suspend\nON_BOOT=start\n")
    lab.start_domain("hand1")
    hand1.address = lab.wait_for_lease(hand1.macs[0], LEASE_TIMEOUT, domain="hand1")
    wait_forwards(lab, hand1)
    note(lab, "reboot 2 (saved and restored)", lab.reboot())
    assert_booted_by_itself(lab)
    saved = lab.box.journal("-b", "-1", "-o", "cat", "-u", "libvirt-guests.service")
    assert "hand1" in saved, saved
    for guest in (auto1, late1, hand1):
        assert lab.domain_state(guest.name) == "running", guest.name
        note(lab, f"reboot 2: boot -> restored {guest.name} answers", wait_forwards(lab, guest, 30.0))
        assert (f"tcp *:{PORTS[guest.name][0]}", f"{guest.address}:80", "live", "yes") in status_rows(lab, guest.name)
    wait_until(lambda: uuids(lab.our_rules()) == {auto1.uuid, late1.uuid, hand1.uuid}, 10.0, "rules of all three")
