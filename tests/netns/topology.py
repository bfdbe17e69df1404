"""The namespaces of a libvirt-like host, shared by the namespace tests and the benchmark.

    client (CLIENT) --veth-- host (uplink0: HOST addresses; virbr0 192.168.122.1/24) --veth-- guest
                             libvirt's own rules of one firewall backend loaded        (GUEST)

No pytest here: bench/ builds the same host without it.
"""

import subprocess
from collections.abc import Sequence
from pathlib import Path


def ip(namespace: str, *args: str) -> None:
    subprocess.run(["ip", "-n", namespace, *args], check=True, capture_output=True, text=True, timeout=30)


def in_ns(namespace: str, *argv: str, input: str | None = None) -> None:
    subprocess.run(
        ["ip", "netns", "exec", namespace, *argv], check=True, capture_output=True, text=True, input=input, timeout=30
    )


def build(
    host: str,
    guest: str,
    client: str,
    *,
    host_addresses: Sequence[str],
    client_address: str,
    guest_mac: str,
    guest_address: str,
    libvirt_firewall: str,
    data: Path,
) -> None:
    """Create the three namespaces (already added with ``ip netns add``) and load libvirt's rules
    of ``libvirt_firewall`` (iptables or nftables, as libvirt writes them, from ``data``)."""
    for namespace in (host, guest, client):
        ip(namespace, "link", "set", "lo", "up")
    ip(host, "link", "add", "virbr0", "type", "bridge")
    ip(host, "addr", "add", "192.168.122.1/24", "dev", "virbr0")
    ip(host, "link", "set", "virbr0", "up")
    ip(host, "link", "add", "vnet0", "type", "veth", "peer", "name", "eth0", "netns", guest)
    ip(host, "link", "set", "vnet0", "master", "virbr0", "up")
    ip(guest, "link", "set", "eth0", "address", guest_mac, "up")
    ip(guest, "addr", "add", f"{guest_address}/24", "dev", "eth0")
    ip(guest, "route", "add", "default", "via", "192.168.122.1")
    ip(host, "link", "add", "uplink0", "type", "veth", "peer", "name", "eth0", "netns", client)
    for address in host_addresses:
        ip(host, "addr", "add", f"{address}/24", "dev", "uplink0")
    ip(host, "link", "set", "uplink0", "up")
    ip(client, "addr", "add", f"{client_address}/24", "dev", "eth0")
    ip(client, "link", "set", "eth0", "up")
    ip(client, "route", "add", "192.168.122.0/24", "via", host_addresses[0])
    in_ns(host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    # as on a libvirt host without br_netfilter: bridged frames do not pass through iptables
    # (where it is loaded, hairpin replies would be un-NATed on the bridge and hide a bug)
    if Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        in_ns(host, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
    if libvirt_firewall == "iptables":
        in_ns(host, "iptables-restore", "--noflush", input=(data / "libvirt-iptables.rules").read_text())
    else:
        in_ns(host, "nft", "-f", str(data / "libvirt-nftables.nft"))
