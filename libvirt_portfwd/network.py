"""libvirt network XML -> Network: bridge, IPv4 subnets and static DHCP reservations.

The hook reads the live network state libvirt keeps under /run/libvirt/network/<net>.xml
(a ``<networkstatus>`` around the ``<network>``), never libvirt's API.
"""

import os
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address

from lxml import etree

from . import limits
from .errors import InputError, shown
from .forward import is_ifname, is_mac, name_problem
from .xmlparse import parse_xml

_FIREWALL = re.compile(r"[a-z0-9_-]{1,32}")


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


class Networks(dict[str, Network]):
    """The live networks by name, and the status files that were refused (by file name stem,
    which is the network's name as libvirt writes them): a forward on one of those says why."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: dict[str, InputError] = {}


def parse_network(data: bytes, where: str = "network XML") -> Network:
    """Parse a network (or its live status); every value that reaches a rule or a message is
    validated as user input would be: libvirt wrote the file, but nothing stops anyone else."""
    limits.check_size(data, limits.NETWORK_XML, where)
    root = parse_xml(data, "invalid network XML", where)
    firewall = None
    if root.tag == "networkstatus":
        for element in root.iter("firewall"):  # libvirt >= 10.4: <firewall ... backend='nftables'>
            firewall = element.get("backend") or firewall
        if firewall is not None and not _FIREWALL.fullmatch(firewall):
            raise InputError("invalid network XML", f"firewall backend {shown(firewall)}", where=where)
        inner = root.find("network")
        if inner is None:
            raise InputError("invalid network XML", "<networkstatus> without <network>", where=where)
        root = inner
    if root.tag != "network":
        raise InputError(
            "invalid network XML", f"root element is <{str(root.tag)[:80]}>, expected <network>", where=where
        )
    name = (root.findtext("name") or "").strip()
    if not name:
        raise InputError("invalid network XML", "no <name>", where=where)
    problem = name_problem(name)
    if problem:
        raise InputError("invalid network XML", f"<name> {problem}: {shown(name)}", where=where)
    bridge = root.find("bridge")
    bridge_name = (bridge.get("name") or None) if bridge is not None else None
    if bridge_name is not None and not is_ifname(bridge_name):
        raise InputError(
            "invalid network XML",
            f"bridge name {shown(bridge_name)} is not an interface name",
            where=f"{where}: network {name}",
        )
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
                if not is_mac(mac):
                    raise InputError(
                        "invalid network XML", f"bad MAC {shown(mac)}", where=f"{where}: network {name} dhcp host"
                    )
                reservations[mac] = _address(address, f"{where}: network {name} dhcp host {mac}")
    return Network(
        name=name,
        bridge=bridge_name,
        forward_mode=(forward.get("mode") or "nat") if forward is not None else None,
        subnets=tuple(subnets),
        reservations=reservations,
        firewall=firewall,
    )


def load_networks(directory: str) -> Networks:
    """Every live network libvirt recorded in ``directory``, by name. A file that cannot be read
    or is refused is skipped (other networks' forwards go on); ``refused`` says why."""
    networks = Networks()
    try:
        names = sorted(e for e in os.listdir(directory) if e.endswith(".xml"))
    except FileNotFoundError:
        return networks
    except OSError as exc:
        raise InputError("cannot read libvirt's networks", exc.strerror or str(exc), where=directory) from None
    limits.NETWORK_FILES.check(len(names), directory)
    for entry in names:
        path = os.path.join(directory, entry)
        try:
            network = parse_network(limits.read_file(path, limits.NETWORK_XML, "network status"), path)
        except FileNotFoundError:  # the network stopped meanwhile
            continue
        except InputError as exc:
            networks.refused[entry[: -len(".xml")]] = exc
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
        raise InputError(
            "invalid network XML", f"bad IPv4 address/prefix {shown(f'{address}/{prefix}')}", where=where
        ) from None


def _classful_prefix(address: str) -> str:
    """libvirt's default when <ip> gives neither prefix nor netmask."""
    head = address.split(".")[0]
    first = int(head) if 0 < len(head) <= 3 and all(c in "0123456789" for c in head) else 0
    return "8" if first < 128 else "16" if first < 192 else "24"


def _address(text: str, where: str) -> IPv4Address:
    try:
        address = ip_address(text)
    except ValueError:
        raise InputError("invalid network XML", f"bad address {shown(text)}", where=where) from None
    if not isinstance(address, IPv4Address):
        raise InputError("invalid network XML", f"expected an IPv4 address, got {shown(text)}", where=where)
    return address
