"""Our parsers against libvirt's own test data (tests/unit/conftest.py finds the corpus).

Every file gives a result or one clean line (InputError); never a traceback. Then concrete
values from files whose content we checked by eye.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from libvirt_portfwd.domain import Domain, Interface, parse_domain
from libvirt_portfwd.errors import PROG, InputError
from libvirt_portfwd.leases import load_leases
from libvirt_portfwd.network import Network, parse_network
from libvirt_portfwd.plan import build_plan

from .helpers import config, leases

NOW = 1_800_000_000  # 2027-01-15: before every expiry-time in nssdata but the one at 1


def parse_or_clean_error(parse: Callable[[bytes, str], object], path: Path) -> object | InputError:
    assert path.is_file(), f"corpus file missing: {path}"
    try:
        return parse(path.read_bytes(), path.name)
    except InputError as exc:
        message = str(exc)
        assert message.startswith(f"{PROG}: "), message
        assert "\n" not in message and "\r" not in message, message
        assert path.name in message, f"the message does not say where: {message}"
        return exc


def test_domain_file(domain_file: Path) -> None:
    result = parse_or_clean_error(parse_domain, domain_file)
    if isinstance(result, Domain):
        assert result.name and result.uuid
        assert all(i.mac is None or i.mac == i.mac.lower() for i in result.interfaces)


def test_network_file(network_file: Path) -> None:
    result = parse_or_clean_error(parse_network, network_file)
    if isinstance(result, Network):
        assert result.name
        assert all(isinstance(a, IPv4Address) for a in result.reservations.values())


def test_status_file(status_file: Path) -> None:
    assert status_file.is_file(), f"corpus file missing: {status_file}"
    result = load_leases(str(status_file), now=NOW)
    assert result and all(isinstance(a, IPv4Address) for a in result.values())


def manifest(corpus: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for name in ("MANIFEST.v4.tsv", "MANIFEST.upstream.tsv"):
        with open(corpus / name, newline="") as handle:
            rows += csv.DictReader(handle, delimiter="\t")
    return rows


def test_corpus_is_complete(corpus: Path) -> None:
    """The counts the corpus README states: a partial copy would quietly test less."""
    assert len(list((corpus / "domains").glob("*.xml"))) == 456
    assert len(list((corpus / "networks").glob("*.xml"))) == 120
    listed = {row["corpus_path"] for row in manifest(corpus)}
    assert {f"domains/{p.name}" for p in (corpus / "domains").glob("*.xml")} <= listed
    assert {f"networks/{p.name}" for p in (corpus / "networks").glob("*.xml")} <= listed


def test_corpus_files_are_upstreams(corpus: Path) -> None:
    """Every file the manifests list is there, byte-identical to libvirt's (SHA-256), and every
    file there is listed: the copy in the repository is libvirt's data, unchanged (its README)."""
    rows = manifest(corpus)
    assert len(rows) == 629
    altered = [row["corpus_path"] for row in rows if sha256(corpus / row["corpus_path"]) != row["sha256"]]
    assert altered == []
    ours = {"README.md", "COPYING.LESSER", "MANIFEST.v4.tsv", "MANIFEST.upstream.tsv"}
    present = {str(p.relative_to(corpus)) for p in corpus.rglob("*") if p.is_file()}
    assert present - ours == {row["corpus_path"] for row in rows}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else f"(missing: {path})"


def test_files_libvirt_rejects_give_a_result_or_one_line(corpus: Path) -> None:
    rejected = [row["corpus_path"] for row in manifest(corpus) if row["libvirt_test_expects"] == "parse-error"]
    assert len(rejected) == 20
    for path in rejected:
        parse = parse_domain if path.startswith("domains/") else parse_network
        parse_or_clean_error(parse, corpus / path)


# --- networks ----------------------------------------------------------------------------


def net(corpus: Path, name: str) -> Network:
    return parse_network((corpus / "networks" / name).read_bytes(), name)


def test_nat_network_bridge_subnets_and_reservations(corpus: Path) -> None:
    n = net(corpus, "networkxml2xmlin__nat-network.xml")
    assert (n.name, n.bridge, n.forward_mode) == ("default", "virbr0", "nat")
    # two IPv6 <ip> skipped; 10.24.10.1 has neither prefix nor netmask: libvirt's classful /8
    assert n.subnets == (
        IPv4Interface("192.168.122.1/24"),
        IPv4Interface("192.168.123.1/24"),
        IPv4Interface("10.24.10.1/8"),
    )
    assert n.reservations == {
        "00:16:3e:77:e2:ed": IPv4Address("192.168.122.10"),
        "00:16:3e:3e:a9:1a": IPv4Address("192.168.122.11"),
    }
    assert n.contains(IPv4Address("192.168.123.7")) and n.contains(IPv4Address("10.200.0.1"))
    assert not n.contains(IPv4Address("192.168.124.1"))


def test_three_reservations(corpus: Path) -> None:
    assert net(corpus, "nat-network-hosts.xml").reservations == {
        "00:16:3e:77:e2:ed": IPv4Address("192.168.122.10"),
        "00:16:3e:3e:a9:1a": IPv4Address("192.168.122.11"),
        "00:16:3e:77:f0:0d": IPv4Address("192.168.122.12"),
    }


def test_updated_reservation(corpus: Path) -> None:
    """`virsh net-update modify ip-dhcp-host` output: the new address."""
    assert net(corpus, "nat-network-host-updated.xml").reservations["00:16:3e:77:e2:ed"] == IPv4Address(
        "192.168.122.47"
    )


def test_reservation_with_lease_time(corpus: Path) -> None:
    n = net(corpus, "leasetime-hours.xml")
    assert n.reservations["00:16:3e:3e:a9:1a"] == IPv4Address("192.168.122.11")
    assert len(n.reservations) == 2


def test_ipv6_dhcp_hosts_are_skipped(corpus: Path) -> None:
    """DHCPv6 <host id=... ip=...> carry no MAC and no IPv4 address: only the IPv4 ones count."""
    n = net(corpus, "dhcp6-nat-network.xml")
    assert set(n.reservations) == {"00:16:3e:77:e2:ed", "00:16:3e:3e:a9:1a"}
    assert IPv4Interface("192.168.122.1/24") in n.subnets


def test_ipv6_only_network_has_no_subnet(corpus: Path) -> None:
    n = net(corpus, "dhcp6-network.xml")
    assert (n.bridge, n.forward_mode, n.subnets, n.reservations) == ("virbr0", "nat", (), {})


def test_forward_without_mode_is_nat(corpus: Path) -> None:
    n = net(corpus, "nat-many-ips.xml")
    assert n.forward_mode == "nat"
    assert [str(s.network) for s in n.subnets] == ["192.168.122.0/24", "192.168.128.0/24", "192.168.150.0/24"]


@pytest.mark.parametrize(
    ("name", "bridge", "mode"),
    [
        ("networkxml2xmlin__routed-network.xml", "virbr1", "route"),
        ("networkxml2xmlin__open-network.xml", "virbr1", "open"),
        ("networkxml2xmlin__isolated-network.xml", "virbr2", None),
        ("networkxml2xmlin__host-bridge-net.xml", "br0", "bridge"),
        ("networkxml2xmlin__hostdev.xml", None, "hostdev"),
        ("networkxml2xmlin__passthrough-pf.xml", None, "passthrough"),
        ("networkxml2xmlin__openvswitch-net.xml", None, "bridge"),
    ],
)
def test_forward_modes(corpus: Path, name: str, bridge: str | None, mode: str | None) -> None:
    n = net(corpus, name)
    assert (n.bridge, n.forward_mode) == (bridge, mode)


def test_name_with_quotes(corpus: Path) -> None:
    assert net(corpus, "nat-network-name-with-quotes.xml").name == 'default"with"quotes"'


def test_networkstatus_wrapper_gives_the_same_network(corpus: Path) -> None:
    """/run/libvirt/network/<net>.xml wraps the definition in <networkstatus>."""
    inner = (corpus / "networks" / "networkxml2xmlin__nat-network.xml").read_bytes()
    live = b"<networkstatus>\n  <class_id bitmap='0-2'/>\n  <floor sum='0'/>\n" + inner + b"</networkstatus>\n"
    assert parse_network(live) == net(corpus, "networkxml2xmlin__nat-network.xml")


# --- domains -----------------------------------------------------------------------------


def dom(corpus: Path, name: str) -> Domain:
    return parse_domain((corpus / "domains" / name).read_bytes(), name)


def test_network_interface(corpus: Path) -> None:
    d = dom(corpus, "console-compat-2.xml")
    assert (d.name, d.uuid) == ("f17", "a1cd52eb-d37f-4717-fc6e-972f0774f4c9")
    assert d.interfaces == (Interface(type="network", mac="52:54:00:ea:35:6f", network="default", bridge=None),)
    assert d.specs == ()


def test_three_network_interfaces(corpus: Path) -> None:
    d = dom(corpus, "qemuxml2argvdata__net-virtio-network-portgroup.xml")
    assert [(i.type, i.mac, i.network) for i in d.interfaces] == [
        ("network", "00:11:22:33:44:55", "rednet"),
        ("network", "10:11:22:33:44:55", "blue"),
        ("network", "22:11:22:33:44:55", "blue"),
    ]


def test_source_before_mac(corpus: Path) -> None:
    d = dom(corpus, "qemuxml2argvdata__net-mtu.xml")
    assert [(i.mac, i.network) for i in d.interfaces] == [
        ("52:54:00:e5:48:58", "default"),
        ("52:54:00:e5:48:59", "default"),
    ]


def test_mixed_interface_types(corpus: Path) -> None:
    d = dom(corpus, "domain-qemu-interface-filterref.xml")
    assert [(i.type, i.mac, i.network, i.bridge) for i in d.interfaces] == [
        ("network", "52:54:00:d6:c0:0b", "default", None),
        ("bridge", "52:54:00:35:82:59", None, "br0"),
        ("server", "52:54:00:22:c9:42", None, None),
        ("client", "52:54:00:8c:b1:f8", None, None),
    ]


def test_bridge_interface_without_mac(corpus: Path) -> None:
    """libvirt invents the MAC at define time; the test XML has none."""
    d = dom(corpus, "bhyvexml2argv-net-e1000.xml")
    assert d.interfaces == (Interface(type="bridge", mac=None, network=None, bridge="virbr0"),)


def test_teaming_repeats_a_mac(corpus: Path) -> None:
    d = dom(corpus, "net-virtio-teaming.xml")
    assert [(i.type, i.mac) for i in d.interfaces] == [
        ("user", "00:11:22:33:44:55"),
        ("user", "66:44:33:22:11:00"),
        ("hostdev", "00:11:22:33:44:55"),
        ("hostdev", "66:44:33:22:11:00"),
    ]


@pytest.mark.parametrize("name", ["net-user-passt.xml", "net-vhostuser-passt.xml"])
def test_passt_port_forwards_are_not_ours(corpus: Path, name: str) -> None:
    """passt's <portForward> inside <interface> uses our vocabulary but is libvirt's own."""
    assert b"<portForward" in (corpus / "domains" / name).read_bytes()
    assert dom(corpus, name).specs == ()


@pytest.mark.parametrize(
    "name",
    [
        "qemuxml2argvdata__metadata.xml",
        "qemuxml2xmloutdata__metadata.xml",
        "qemuxml2argvdata__metadata-duplicate.xml",
        "qemuxml2xmloutdata__metadata-duplicate.xml",
        "bhyvexml2argv-metadata.xml",
    ],
)
def test_other_applications_metadata_is_ignored(corpus: Path, name: str) -> None:
    d = dom(corpus, name)
    assert d.specs == ()


def test_domain_without_name(corpus: Path) -> None:
    with pytest.raises(InputError) as caught:
        dom(corpus, "vmx2xml-ethernet-nat.xml")
    assert str(caught.value) == "libvirt-portfwd: invalid domain XML (vmx2xml-ethernet-nat.xml): no <name>"


def test_domain_without_uuid(corpus: Path) -> None:
    with pytest.raises(InputError) as caught:
        dom(corpus, "qemumemlock-pc-locked.xml")
    assert str(caught.value) == (
        "libvirt-portfwd: guest: invalid domain XML (qemumemlock-pc-locked.xml): <uuid> is not a UUID: None"
    )


def test_name_with_slash_is_accepted(corpus: Path) -> None:
    """libvirt rejects it; we only need the name for messages (chains use the UUID)."""
    assert dom(corpus, "name-slash-fail.xml").name == "foo/bar"


def test_corpus_domain_on_corpus_network_plans(corpus: Path) -> None:
    """A config forward for corpus domain f17 on corpus network default: one resolved forward."""
    d = dom(corpus, "console-compat-2.xml")
    n = net(corpus, "networkxml2xmlin__nat-network.xml")
    cfg = config({"domains": {"f17": [{"proto": "tcp", "ranges": [{"start": 2222, "to": 22}]}]}})
    lookup = leases({"virbr0": {"52:54:00:ea:35:6f": "192.168.122.30"}})
    plan = build_plan(d, cfg.specs_for(d.name, d.uuid), cfg, {n.name: n}, lookup)
    assert [(f.mac, f.bridge, str(f.guest), f.start, f.guest_port) for f in plan.forwards] == [
        ("52:54:00:ea:35:6f", "virbr0", "192.168.122.30", 2222, 22)
    ]


# --- lease status files --------------------------------------------------------------------


def status(corpus: Path, name: str) -> str:
    return str(corpus / "extras" / "nssdata" / name)


def test_leases_virbr0(corpus: Path) -> None:
    assert load_leases(status(corpus, "virbr0.status"), now=NOW) == {
        "52:54:00:a4:6f:91": IPv4Address("192.168.122.197"),
        "52:54:00:a4:6f:92": IPv4Address("192.168.122.198"),
        "52:54:00:3a:b5:0c": IPv4Address("192.168.122.254"),
        "52:54:00:11:22:33": IPv4Address("192.168.122.2"),
    }


def test_leases_virbr0_later(corpus: Path) -> None:
    """After 1900000000 the two fedora leases have expired; the rest run to 2000000000."""
    assert load_leases(status(corpus, "virbr0.status"), now=1_950_000_000) == {
        "52:54:00:3a:b5:0c": IPv4Address("192.168.122.254"),
        "52:54:00:11:22:33": IPv4Address("192.168.122.2"),
    }


def test_leases_virbr1_skips_ipv6_and_expired(corpus: Path) -> None:
    """gentoo's lease is IPv6 (skipped); 52:54:00:a4:6f:94 expired at 1 (long ago)."""
    assert load_leases(status(corpus, "virbr1.status"), now=NOW) == {
        "52:54:00:a4:6f:93": IPv4Address("192.168.122.199"),
        "52:54:00:aa:bb:cc": IPv4Address("192.168.122.3"),
    }
