"""Smoke tests of the lab itself: no libvirt-portfwd installed, guests reached directly."""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.lab.guest import HTTP_PORTS, UDP_PORTS, mac_for
from tests.lab.host import RELEASE_FIREWALLS, Lab

pytestmark = pytest.mark.e2e

PAYLOAD = b"ping-\x00\xff"


def test_guest_serves_and_powers_off_on_acpi(lab: Lab) -> None:
    began = time.monotonic()
    guest = lab.start_guest("smoke-acpi")
    print(f"\nsmoke-acpi: lease+http after {time.monotonic() - began:.1f}s at {guest.address}")
    assert guest.address is not None

    for port in HTTP_PORTS:
        assert lab.http_get_from_host(guest.address, port) == guest.http_body(port)
    for port in UDP_PORTS:
        assert lab.udp_echo_from_host(guest.address, port, PAYLOAD) == guest.udp_reply(port, PAYLOAD)
    # Without forwards, libvirt's own firewall refuses the client's direct connection.
    probe = lab.http_probe(lab.client_ns, guest.address, 80, timeout=3.0)
    assert not probe.ok
    assert "refused" in probe.error

    elapsed = lab.shutdown(guest.name, timeout=60.0)
    print(f"smoke-acpi: virsh shutdown -> shut off in {elapsed:.1f}s")
    assert lab.domain_state(guest.name) == "shut off"
    lab.undefine(guest.name)


def test_guest_destroy_restart_and_daemon_reload(lab: Lab) -> None:
    guest = lab.start_guest("smoke-destroy")
    first_address = guest.address
    elapsed = lab.destroy(guest.name)
    print(f"\nsmoke-destroy: virsh destroy -> shut off in {elapsed:.1f}s")
    assert lab.domain_state(guest.name) == "shut off"

    # The same MAC gets the same address again, and wait_for_lease sees the new lease only.
    lab.start_domain(guest.name)
    began = time.monotonic()
    assert lab.wait_for_guest(guest) == first_address
    print(f"smoke-destroy: lease+http after restart {time.monotonic() - began:.1f}s")

    restart = lab.restart_libvirtd()
    print(f"smoke-destroy: libvirtd restart {restart:.1f}s")
    assert lab.domain_state(guest.name) == "running"
    assert lab.http_get_from_host(guest.address or "", 80) == guest.http_body(80)

    lab.sighup_libvirtd()
    assert lab.domain_state(guest.name) == "running"
    assert lab.udp_echo_from_host(guest.address or "", UDP_PORTS[0], PAYLOAD) == guest.udp_reply(UDP_PORTS[0], PAYLOAD)

    lab.destroy(guest.name)
    lab.undefine(guest.name)


METADATA = (
    '<portfwd:portfwd xmlns:portfwd="urn:libvirt-portfwd:1">'
    '<portfwd:portForward proto="tcp" address="203.0.113.1"><portfwd:range start="2080" to="80"/>'
    "</portfwd:portForward></portfwd:portfwd>"
)


def test_two_nic_guest_with_metadata(lab: Lab) -> None:
    macs = (mac_for("smoke-2nic", 0), mac_for("smoke-2nic", 1))
    guest = lab.start_guest("smoke-2nic", macs=macs, metadata=METADATA)
    second = lab.wait_for_lease(macs[1], 30.0, domain=guest.name)
    print(f"\nsmoke-2nic: {guest.address} and {second}")
    assert second != guest.address
    assert lab.http_get_from_host(second, 443) == guest.http_body(443)
    stored = lab.virsh("metadata", guest.name, "--uri", "urn:libvirt-portfwd:1").stdout
    assert 'start="2080"' in stored
    lab.destroy(guest.name)
    lab.undefine(guest.name)


def test_libvirt_runs_the_network_with_the_requested_firewall(lab: Lab, libvirt_firewall: str) -> None:
    """The lab's libvirtd took its firewall_backend (its live network status records it), and
    its rules are where that backend puts them."""
    status = ET.parse(lab.network_status()).getroot()
    firewall = status.find("firewall")
    if RELEASE_FIREWALLS[lab.release] == ("iptables",):  # libvirt before 10.4 records none: iptables only
        assert firewall is None and libvirt_firewall == "iptables", ET.tostring(status)[:500]
    else:
        assert firewall is not None and firewall.get("backend") == libvirt_firewall, ET.tostring(status)[:500]
    nft = lab.run_in_host(["nft", "list", "table", "ip", "libvirt_network"], check=False)
    iptables = lab.run_in_host(["iptables-save"]).stdout
    if libvirt_firewall == "nftables":
        assert "guest_input" in nft.stdout and "LIBVIRT_FWI" not in iptables
    else:
        assert nft.returncode != 0 and "-A FORWARD -j LIBVIRT_FWI" in iptables


def test_libvirt_runs_from_the_labs_root_not_the_machine(lab: Lab) -> None:
    """libvirtd is the root's (its version as built, chrooted, in a mount namespace of its own):
    nothing of the machine's libvirt, if it has one, is used."""
    assert lab.rootfs is not None
    built = str(lab.rootfs.info["versions"]["libvirt-daemon"])  # type: ignore[index]
    upstream = built.split("-")[0].split(":")[-1]
    assert "Running hypervisor: QEMU" in lab.virsh("version", "--daemon").stdout
    assert f"Using library: libvirt {upstream}" in lab.virsh("version").stdout
    pid = lab.libvirtd_pid()
    assert pid is not None
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    # its / is the lab's overlay of the cached root (mountinfo: ... MOUNTPOINT ... - TYPE SOURCE OPTIONS)
    mounts = [line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()]
    root = [fields for fields in mounts if fields[4] == "/"]
    assert root, mounts
    assert root[-1][root[-1].index("-") + 1] == "overlay", root
    assert f"lowerdir={lab.rootfs.path}," in root[-1][-1], root
