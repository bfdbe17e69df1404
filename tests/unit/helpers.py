"""Builders for the unit tests: domain and network XML shaped as libvirt writes them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address
from xml.sax.saxutils import quoteattr

from libvirt_portfwd.config import Config, build_config
from libvirt_portfwd.domain import Domain, parse_domain
from libvirt_portfwd.forward import ForwardSpec, parse_spec
from libvirt_portfwd.network import Network, parse_network
from libvirt_portfwd.plan import LeaseLookup

NS = "urn:libvirt-portfwd:1"
UUID = "4f0c6a2e-8b1d-4c3e-9a5f-7d2b1e0c9a84"
UUID2 = "9e3b7c1d-2a4f-4e6b-8c0d-1f2e3a4b5c6d"
MAC1 = "52:54:00:6b:3c:01"
MAC2 = "52:54:00:6b:3c:02"
CONFIG_PATH = "/etc/libvirt-portfwd/config.yaml"


def attrs(values: Mapping[str, object]) -> str:
    return "".join(f" {k}={quoteattr(str(v))}" for k, v in values.items())


def nic(
    mac: str | None = MAC1, network: str | None = "default", type_: str = "network", bridge: str | None = None
) -> str:
    """One <interface>; at ``started`` libvirt adds the bridge to a network NIC's <source>."""
    source = {}
    if network is not None:
        source["network"] = network
    if bridge is not None:
        source["bridge"] = bridge
    mac_line = f"<mac address='{mac}'/>" if mac else ""
    return f"<interface type='{type_}'>{mac_line}<source{attrs(source)}/><model type='virtio'/></interface>"


def domain_xml(metadata: str = "", nics: Iterable[str] | None = None, name: str = "web1", uuid: str = UUID) -> bytes:
    devices = "".join(nics if nics is not None else [nic()])
    meta = f"<metadata>{metadata}</metadata>" if metadata else ""
    return (
        f"<domain type='kvm'><name>{name}</name><uuid>{uuid}</uuid>{meta}"
        f"<memory unit='KiB'>262144</memory><devices>{devices}</devices></domain>"
    ).encode()


def range_(values: Mapping[str, object], prefix: str = "portfwd:") -> str:
    return f"<{prefix}range{attrs(values)}/>"


def forward(values: Mapping[str, object] | None = None, *ranges: Mapping[str, object], prefix: str = "portfwd:") -> str:
    body = "".join(range_(r, prefix) for r in ranges or [{"start": 8080, "to": 80}])
    return f"<{prefix}portForward{attrs(values or {})}>{body}</{prefix}portForward>"


def portfwd(*forwards: str, ns: str = NS) -> str:
    """Our metadata as libvirt stores it: the key as prefix on the root and every child."""
    return f'<portfwd:portfwd xmlns:portfwd="{ns}">{"".join(forwards)}</portfwd:portfwd>'


def domain(*forwards: str, nics: Iterable[str] | None = None, name: str = "web1", uuid: str = UUID) -> Domain:
    return parse_domain(domain_xml(portfwd(*forwards) if forwards else "", nics, name, uuid))


def network_xml(
    name: str = "default",
    bridge: str | None = "virbr0",
    mode: str | None = "nat",
    ip: str = "192.168.122.1",
    prefix: int = 24,
    hosts: Mapping[str, str] | None = None,
) -> bytes:
    """/run/libvirt/network/<name>.xml: the live <networkstatus>."""
    forward = f"<forward mode='{mode}'/>" if mode else ""
    bridge_line = f"<bridge name='{bridge}' stp='on' delay='0'/>" if bridge else ""
    host_lines = "".join(f"<host mac='{m}' ip='{a}'/>" for m, a in (hosts or {}).items())
    return (
        f"<networkstatus><class_id bitmap='0-2'/><network><name>{name}</name>{forward}{bridge_line}"
        f"<ip address='{ip}' prefix='{prefix}'><dhcp><range start='{ip[:-1]}2' end='{ip[:-1]}254'/>"
        f"{host_lines}</dhcp></ip></network></networkstatus>"
    ).encode()


def network(**kwargs: object) -> Network:
    return parse_network(network_xml(**kwargs))  # type: ignore[arg-type]


def networks(*items: Network) -> dict[str, Network]:
    return {n.name: n for n in items or (network(),)}


def leases(by_bridge: Mapping[str, Mapping[str, str]] | None = None) -> LeaseLookup:
    """A lease lookup (bridge -> MAC -> address) from plain strings."""
    table = {b: {m: IPv4Address(a) for m, a in macs.items()} for b, macs in (by_bridge or {}).items()}
    return lambda bridge: table.get(bridge, {})


def spec(values: Mapping[str, object] | None = None, *ranges: Mapping[str, object], where: str = "test") -> ForwardSpec:
    return parse_spec(dict(values or {}), [dict(r) for r in ranges or [{"start": 8080, "to": 80}]], where)


def config(document: object = None, path: str = CONFIG_PATH) -> Config:
    return build_config({} if document is None else document, path)
