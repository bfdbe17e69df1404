"""What the benchmark feeds the hook: addresses, domain XML, libvirt's network status and leases.

    client (203.0.113.2) --veth-- host (203.0.113.10, .11; virbr0 192.168.122.1/24) --veth-- guest
                          libvirt's own iptables rules (or nftables table) loaded (192.168.122.178)

The measured domains sit on libvirt's ``default`` network (virbr0) and share the guest's MAC
(only one of them runs at a time). The "other" domains of the scale tests sit on a second
network ``bulk`` (virbr1, 10.122.0.0/16, room for 1,000 leases); their addresses only ever
appear inside rules: no packet is sent to them.
"""

import json
import time

HOST_ADDRESS = "203.0.113.10"
BULK_ADDRESS = "203.0.113.11"
CLIENT_ADDRESS = "203.0.113.2"
GUEST_MAC = "52:54:00:aa:bb:cc"
GUEST_ADDRESS = "192.168.122.178"
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FIRST_PORT = 20000  # measured domains: host ports 20000.. -> guest ports 8000..
BULK_FIRST_PORT = 30000  # other domains: 30000 + 10 * i + j
BULK_FORWARDS = 10
WEB_PORT, WEB_GUEST_PORT = 20443, 443  # the data path's forward

NETWORK_XML = """<networkstatus>
  <class_id bitmap='0-2'/>{firewall}
  <network>
    <name>{name}</name>
    <uuid>{uuid}</uuid>
    <forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward>
    <bridge name='{bridge}' stp='on' delay='0'/>
    <mac address='52:54:00:0a:0b:{mac}'/>
    <ip address='{address}' netmask='{netmask}'>
      <dhcp><range start='{first}' end='{last}'/></dhcp>
    </ip>
  </network>
</networkstatus>
"""

# libvirt >= 10.4 records its firewall backend in a network's live status; 9.0 (iptables only) does not
NFTABLES_FIREWALL = "\n  <firewall name='fwRemoval' backend='nftables'/>"


def network_status(template: str, kind: str) -> str:
    """A network's live status for a host whose libvirt runs ``kind`` (iptables or nftables)."""
    return template.replace("{firewall}", NFTABLES_FIREWALL if kind == "nftables" else "")


DEFAULT_NETWORK = NETWORK_XML.format(
    firewall="{firewall}",
    name="default",
    uuid="0d8ab1b4-1f83-4d26-9d2f-6e0d5c7f3a01",
    bridge="virbr0",
    mac="0c",
    address="192.168.122.1",
    netmask="255.255.255.0",
    first="192.168.122.2",
    last="192.168.122.254",
)
BULK_NETWORK = NETWORK_XML.format(
    firewall="{firewall}",
    name="bulk",
    uuid="0d8ab1b4-1f83-4d26-9d2f-6e0d5c7f3a02",
    bridge="virbr1",
    mac="0d",
    address="10.122.0.1",
    netmask="255.255.0.0",
    first="10.122.1.2",
    last="10.122.254.254",
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
    source = f"<source network='{network}' bridge='{bridge}'/>" if running else f"<source network='{network}'/>"
    target = "<target dev='vnet0'/>" if running else ""
    metadata = ""
    if forwards:
        ranges = "".join(f'<portfwd:range start="{host}" to="{guest}"/>' for host, guest in forwards)
        metadata = (
            '<portfwd:portfwd xmlns:portfwd="urn:libvirt-portfwd:1">'
            f'<portfwd:portForward proto="tcp" address="{address}">{ranges}</portfwd:portForward>'
            "</portfwd:portfwd>"
        )
    return f"""<domain type='{domain_type}'>
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


def leases_json(leases: dict[str, str]) -> str:
    """A dnsmasq status file (libvirt's leaseshelper format), every lease valid for an hour."""
    expiry = int(time.time()) + 3600
    entries = [{"ip-address": a, "mac-address": m, "hostname": "g", "expiry-time": expiry} for m, a in leases.items()]
    return json.dumps(entries, indent=2)


def bulk_leases(count: int) -> dict[str, str]:
    return {bulk_mac(i): bulk_address(i) for i in range(count)}
