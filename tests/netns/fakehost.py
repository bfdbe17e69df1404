"""A libvirt-like host in network namespaces, shared by the namespace tests and the benchmark:
its addresses, the namespaces, and the files libvirt writes (network status, leases, the domain
XML it hands the hook).

    client (CLIENT) --veth-- host (uplink0: HOST addresses; virbr0 192.168.122.1/24) --veth-- guest
                             libvirt's own rules of one firewall backend loaded        (GUEST)

No pytest here: bench/ builds the same host without it.
"""

import json
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

GUEST_MAC = "52:54:00:aa:bb:cc"
GUEST_ADDRESS = "192.168.122.178"
HOST_ADDRESS = "203.0.113.10"
HOST_ADDRESS_2 = "203.0.113.11"
CLIENT_ADDRESS = "203.0.113.2"
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # what libvirtd gives hooks
# libvirt >= 10.4 records its firewall backend in a network's live status; 9.0 (iptables only) does not
NFTABLES_FIREWALL = "\n  <firewall name='fwRemoval' backend='nftables'/>"


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


def network_status(
    name: str = "default",
    uuid: str = "0d8ab1b4-1f83-4d26-9d2f-6e0d5c7f3a01",
    bridge: str = "virbr0",
    *,
    libvirt_firewall: str,
    mac: str = "52:54:00:0a:0b:0c",
    address: str = "192.168.122.1",
    netmask: str = "255.255.255.0",
    dhcp: tuple[str, str] = ("192.168.122.2", "192.168.122.254"),
    reservations: dict[str, str] | None = None,
) -> str:
    """``/run/libvirt/network/<name>.xml`` of a running NAT network whose libvirt runs
    ``libvirt_firewall``; ``reservations``: MAC -> address (``<dhcp><host/>``)."""
    hosts = "".join(f"<host mac='{m}' ip='{a}'/>" for m, a in (reservations or {}).items())
    firewall = NFTABLES_FIREWALL if libvirt_firewall == "nftables" else ""
    return f"""<networkstatus>
  <class_id bitmap='0-2'/>{firewall}
  <network>
    <name>{name}</name>
    <uuid>{uuid}</uuid>
    <forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward>
    <bridge name='{bridge}' stp='on' delay='0'/>
    <mac address='{mac}'/>
    <ip address='{address}' netmask='{netmask}'>
      <dhcp><range start='{dhcp[0]}' end='{dhcp[1]}'/>{hosts}</dhcp>
    </ip>
  </network>
</networkstatus>
"""


def domain_xml(
    name: str,
    uuid: str,
    mac: str = GUEST_MAC,
    metadata: str = "",
    running: bool = True,
    *,
    network: str = "default",
    bridge: str = "virbr0",
    domain_type: str = "qemu",
) -> str:
    """Domain XML as libvirt hands it to the hook: at ``started`` with its id, bridge and target
    device; ``running=False`` is the XML of ``stopped``/``release``, without them."""
    domain_id = " id='1'" if running else ""
    source = f"<source network='{network}' bridge='{bridge}'/>" if running else f"<source network='{network}'/>"
    target = "<target dev='vnet0'/>" if running else ""
    return f"""<domain type='{domain_type}'{domain_id}>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='KiB'>262144</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <interface type='network'>
      <mac address='{mac}'/>
      {source}
      {target}
      <model type='virtio'/>
    </interface>
  </devices>
  <metadata>{metadata}</metadata>
</domain>
"""


def leases_json(leases: dict[str, str], expiry: int | None = None) -> str:
    """A dnsmasq status file (libvirt's leaseshelper format); MAC -> address, valid an hour."""
    expiry = int(time.time()) + 3600 if expiry is None else expiry
    entries = [{"ip-address": a, "mac-address": m, "hostname": "g", "expiry-time": expiry} for m, a in leases.items()]
    return json.dumps(entries, indent=2)


def write_atomic(path: Path, text: str) -> None:
    """As libvirt writes its files: a temporary file, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
