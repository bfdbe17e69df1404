"""What the benchmark feeds the hook: addresses, domain XML, libvirt's network status and leases.

    client (203.0.113.2) --veth-- host (203.0.113.10, .11; virbr0 192.168.122.1/24) --veth-- guest
                          libvirt's own iptables rules (or nftables table) loaded (192.168.122.178)

The measured domains sit on libvirt's ``default`` network (virbr0) and share the guest's MAC
(only one of them runs at a time). The "other" domains of the scale tests sit on a second
network ``bulk`` (virbr1, 10.122.0.0/16, room for 1,000 leases); their addresses only ever
appear inside rules: no packet is sent to them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/netns/fakehost.py, shared with the tests
from tests.netns import fakehost
from tests.netns.fakehost import CLIENT_ADDRESS, GUEST_ADDRESS, GUEST_MAC, HOOK_PATH, HOST_ADDRESS

BULK_ADDRESS = fakehost.HOST_ADDRESS_2
FIRST_PORT = 20000  # measured domains: host ports 20000.. -> guest ports 8000..
BULK_FIRST_PORT = 30000  # other domains: 30000 + 10 * i + j
BULK_FORWARDS = 10
WEB_PORT, WEB_GUEST_PORT = 20443, 443  # the data path's forward
__all__ = ["CLIENT_ADDRESS", "GUEST_ADDRESS", "GUEST_MAC", "HOOK_PATH", "HOST_ADDRESS"]  # used as scenario.X


def default_network(libvirt_firewall: str) -> str:
    return str(fakehost.network_status(libvirt_firewall=libvirt_firewall))


def bulk_network(libvirt_firewall: str) -> str:
    return str(
        fakehost.network_status(
            "bulk",
            "0d8ab1b4-1f83-4d26-9d2f-6e0d5c7f3a02",
            "virbr1",
            libvirt_firewall=libvirt_firewall,
            mac="52:54:00:0a:0b:0d",
            address="10.122.0.1",
            netmask="255.255.0.0",
            dhcp=("10.122.1.2", "10.122.254.254"),
        )
    )


def domain_xml(
    name: str,
    uuid: str,
    forwards: list[tuple[int, int]],
    *,
    mac: str = GUEST_MAC,
    address: str = HOST_ADDRESS,
    network: str = "default",
    bridge: str = "virbr0",
    running: bool = True,
    domain_type: str = "qemu",
) -> str:
    """Domain XML as libvirt hands it to the hook; ``forwards``: (host port, guest port) pairs.

    The forwards are one ``<portForward>`` with one ``<range>`` each, stored the way libvirt
    stores what ``virsh metadata --key portfwd`` set (prefixed elements). ``running=False`` is
    the XML of ``stopped``/``release``: no bridge, no target device.
    """
    metadata = ""
    if forwards:
        ranges = "".join(f'<portfwd:range start="{host}" to="{guest}"/>' for host, guest in forwards)
        metadata = (
            '<portfwd:portfwd xmlns:portfwd="urn:libvirt-portfwd:1">'
            f'<portfwd:portForward proto="tcp" address="{address}">{ranges}</portfwd:portForward>'
            "</portfwd:portfwd>"
        )
    return str(
        fakehost.domain_xml(name, uuid, mac, metadata, running, network=network, bridge=bridge, domain_type=domain_type)
    )


def measured_forwards(count: int) -> list[tuple[int, int]]:
    return [(FIRST_PORT + i, 8000 + i) for i in range(count)]


def measured_uuid(tag: int) -> str:
    return f"6f1d0c9a-6a3b-4c55-9a3e-{tag:012x}"


# -- the other domains of the scale tests (network "bulk") ---------------------------------------
def bulk_uuid(i: int) -> str:
    return f"b0000000-0000-4000-8000-{i:012x}"


def bulk_mac(i: int) -> str:
    return f"52:54:01:00:{i >> 8:02x}:{i & 0xFF:02x}"


def bulk_address(i: int) -> str:
    return f"10.122.{1 + i // 250}.{2 + i % 250}"


def bulk_domain_xml(i: int, domain_type: str = "test") -> str:
    forwards = [(BULK_FIRST_PORT + BULK_FORWARDS * i + j, 8000 + j) for j in range(BULK_FORWARDS)]
    return domain_xml(
        f"bulk{i:04d}",
        bulk_uuid(i),
        forwards,
        mac=bulk_mac(i),
        address=BULK_ADDRESS,
        network="bulk",
        bridge="virbr1",
        domain_type=domain_type,
    )


def node_xml(count: int) -> str:
    """A node for libvirt's test driver (``test:///path``) whose ``count`` domains all run."""
    return "<node>\n" + "".join(bulk_domain_xml(i) for i in range(count)) + "</node>\n"


leases_json = fakehost.leases_json


def bulk_leases(count: int) -> dict[str, str]:
    return {bulk_mac(i): bulk_address(i) for i in range(count)}
