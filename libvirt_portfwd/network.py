"""libvirt network XML -> Network: bridge, IPv4 subnets and static DHCP reservations.

The hook reads the live network state libvirt keeps under /run/libvirt/network/<net>.xml
(a ``<networkstatus>`` around the ``<network>``), never libvirt's API.
"""

import os
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address

from lxml import etree

from .errors import InputError
from .xmlparse import parse_xml


@dataclass(frozen=True)
class Network:
    name: str
    bridge: str | None
    forward_mode: str | None  # None: isolated
    subnets: tuple[IPv4Interface, ...]
    reservations: dict[str, IPv4Address] = field(default_factory=dict)  # MAC -> address
    firewall: str | None = None  # the firewall backend libvirt runs it with (live status only)

    def contains(self, address: IPv4Address) -> bool:
        return any(address in subnet.network for subnet in self.subnets)

    @property
    def networks(self) -> tuple[IPv4Network, ...]:
        return tuple(subnet.network for subnet in self.subnets)


def parse_network(data: bytes, where: str = "network XML") -> Network:
    root = parse_xml(data, "invalid network XML", where)
    firewall = None
    if root.tag == "networkstatus":
        for element in root.iter("firewall"):  # libvirt >= 10.4: <firewall ... backend='nftables'>
            firewall = element.get("backend") or firewall
        inner = root.find("network")
        if inner is None:
            raise InputError("invalid network XML", "<networkstatus> without <network>", where=where)
        root = inner
    if root.tag != "network":
        raise InputError("invalid network XML", f"root element is <{root.tag}>, expected <network>", where=where)
    name = (root.findtext("name") or "").strip()
    if not name:
        raise InputError("invalid network XML", "no <name>", where=where)
    bridge = root.find("bridge")
    forward = root.find("forward")
    subnets, reservations = [], {}
    for ip in root.iterfind("ip"):
        subnet = _parse_ipv4(ip, f"{where}: network {name}")
        if subnet is None:
            continue
        subnets.append(subnet)
        for host in ip.iterfind("dhcp/host"):
            mac, address = (host.get("mac") or "").strip().lower(), (host.get("ip") or "").strip()
            if mac and address:
                reservations[mac] = _address(address, f"{where}: network {name} dhcp host {mac}")
    return Network(
        name=name,
        bridge=(bridge.get("name") or None) if bridge is not None else None,
        forward_mode=(forward.get("mode") or "nat") if forward is not None else None,
        subnets=tuple(subnets),
        reservations=reservations,
        firewall=firewall,
    )


def load_networks(directory: str) -> dict[str, Network]:
    """Every live network libvirt recorded in ``directory``, by name; unreadable ones are skipped."""
    networks: dict[str, Network] = {}
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return networks
    for entry in names:
        if not entry.endswith(".xml"):
            continue
        path = os.path.join(directory, entry)
        try:
            with open(path, "rb") as handle:
                network = parse_network(handle.read(), path)
        except (OSError, InputError):
            continue
        networks[network.name] = network
    return networks


def _parse_ipv4(ip: etree._Element, where: str) -> IPv4Interface | None:
    family = ip.get("family", "ipv4")
    address = ip.get("address")
    if family != "ipv4" or not address or ":" in address:
        return None
    prefix = ip.get("prefix") or ip.get("netmask") or _classful_prefix(address)
    try:
        return IPv4Interface(f"{address}/{prefix}")
    except ValueError:
        raise InputError("invalid network XML", f"bad IPv4 address/prefix {address}/{prefix}", where=where) from None


def _classful_prefix(address: str) -> str:
    """libvirt's default when <ip> gives neither prefix nor netmask."""
    first = int(address.split(".")[0]) if address.split(".")[0].isdigit() else 0
    return "8" if first < 128 else "16" if first < 192 else "24"


def _address(text: str, where: str) -> IPv4Address:
    try:
        address = ip_address(text)
    except ValueError:
        raise InputError("invalid network XML", f"bad address {text!r}", where=where) from None
    if not isinstance(address, IPv4Address):
        raise InputError("invalid network XML", f"expected an IPv4 address, got {text!r}", where=where)
    return address
