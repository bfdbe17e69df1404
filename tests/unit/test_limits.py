"""Every limit of limits.py: one over it is one clear line naming the limit and the value; at it,
the input works. Then the validation of values that are not limits: what libvirt's own files
hold, interface names that look like options, guest addresses that are the host's, strict YAML.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from libvirt_portfwd import cli, limits, yamlload
from libvirt_portfwd.config import load_config
from libvirt_portfwd.domain import parse_domain
from libvirt_portfwd.errors import PortfwdError
from libvirt_portfwd.leases import load_leases
from libvirt_portfwd.network import load_networks, parse_network
from libvirt_portfwd.plan import Plan, build_plan, collect_specs, count_rules

from .helpers import MAC1, UUID, config, domain_xml, forward, network_xml, networks, nic, portfwd

GUEST = "192.168.122.50"


def lookup(bridge: str) -> dict[str, IPv4Address]:
    return {MAC1: IPv4Address(GUEST)}


def assert_one_line(error: BaseException | str, *needles: str) -> str:
    """A clear line: our prefix, one line, short, naming what it must name."""
    message = str(error)
    assert message.startswith("libvirt-portfwd: ") and "\n" not in message and len(message) < 400, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def over(limit: limits.Limit, error: BaseException | str) -> str:
    """The message of a breached limit names the limit and its value."""
    return assert_one_line(error, "over a limit", limit.name, f"the limit is {limit.value}")


def raises(call: Callable[[], object]) -> PortfwdError:
    with pytest.raises(PortfwdError) as caught:
        call()
    return caught.value


def plan_of(xml: bytes, document: object = None) -> Plan:
    d = parse_domain(xml)
    cfg = config(document)
    return build_plan(d, collect_specs(d, cfg), cfg, networks(), lookup)


def forwards_xml(n: int, *, ranges_each: int = 1, **attrs: str) -> bytes:
    """n forwards of ranges_each one-port ranges each, every port distinct."""
    body = [forward(attrs, *({"start": 1000 + i * ranges_each + j} for j in range(ranges_each))) for i in range(n)]
    return domain_xml(portfwd(*body))


def padded(xml: bytes, size: int) -> bytes:
    """The domain XML grown to exactly ``size`` bytes (whitespace before the root's end tag)."""
    end = xml.rindex(b"</domain>")
    return xml[:end] + b" " * (size - len(xml)) + xml[end:]


# --- sizes of what is read --------------------------------------------------------------------


def test_domain_xml_size(tmp_path: Path) -> None:
    xml = domain_xml(portfwd(forward({"proto": "tcp"}, {"start": 8080, "to": 80})))
    assert parse_domain(padded(xml, limits.DOMAIN_XML.value)).name == "web1"
    over(limits.DOMAIN_XML, raises(lambda: parse_domain(padded(xml, limits.DOMAIN_XML.value + 1))))
    path = tmp_path / "big.xml"  # and read from a file: at most the limit and one byte is read
    path.write_bytes(padded(xml, limits.DOMAIN_XML.value + 1) + b" " * limits.DOMAIN_XML.value)
    over(limits.DOMAIN_XML, raises(lambda: limits.read_file(str(path), limits.DOMAIN_XML, "domain XML")))


def test_plan_of_too_big_a_domain_xml_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    xml = domain_xml(portfwd(forward({"proto": "tcp"}, {"start": 8080, "to": 80})))
    path = tmp_path / "web1.xml"
    path.write_bytes(padded(xml, limits.DOMAIN_XML.value + 1))
    assert cli.main(["--root", str(tmp_path / "root"), "plan", "--backend", "none", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    over(limits.DOMAIN_XML, captured.err.removesuffix("\n"))
    path.write_bytes(padded(xml, limits.DOMAIN_XML.value))
    network = tmp_path / "root/run/libvirt/network/default.xml"
    network.parent.mkdir(parents=True)
    network.write_bytes(network_xml())
    assert cli.main(["--root", str(tmp_path / "root"), "plan", "--backend", "none", str(path)]) == 0
    assert "tcp *:8080 -> None:80" in capsys.readouterr().out  # no lease under this root: waiting


def test_network_status_size(tmp_path: Path) -> None:
    xml = network_xml()
    end = xml.rindex(b"</networkstatus>")
    at = xml[:end] + b" " * (limits.NETWORK_XML.value - len(xml)) + xml[end:]
    (tmp_path / "default.xml").write_bytes(at)
    assert list(load_networks(str(tmp_path))) == ["default"]
    (tmp_path / "default.xml").write_bytes(at[:end] + b" " + at[end:])
    refused = load_networks(str(tmp_path))
    assert not refused and over(limits.NETWORK_XML, refused.refused["default"])
    d = parse_domain(domain_xml(portfwd(forward())))
    error = raises(lambda: build_plan(d, d.specs, config(), refused, lookup))
    over(limits.NETWORK_XML, error)  # the forward's error says why its network was not read
    over(limits.NETWORK_XML, raises(lambda: parse_network(at[:end] + b" " + at[end:])))


def test_network_status_files(tmp_path: Path) -> None:
    for i in range(limits.NETWORK_FILES.value):
        (tmp_path / f"net{i}.xml").write_bytes(network_xml(name=f"net{i}", bridge=f"virbr{i}"))
    assert len(load_networks(str(tmp_path))) == limits.NETWORK_FILES.value
    (tmp_path / "one-more.xml").write_bytes(network_xml(name="one-more", bridge="virbr9999"))
    over(limits.NETWORK_FILES, raises(lambda: load_networks(str(tmp_path))))


def lease_file(size: int) -> bytes:
    entry = {"ip-address": GUEST, "mac-address": MAC1, "expiry-time": 0}
    text = json.dumps([entry])
    return (text[:-1] + " " * (size - len(text)) + "]").encode()


def test_lease_file_size(tmp_path: Path) -> None:
    path = tmp_path / "virbr0.status"
    path.write_bytes(lease_file(limits.LEASE_FILE.value))
    assert load_leases(str(path)) == {MAC1: IPv4Address(GUEST)}
    path.write_bytes(lease_file(limits.LEASE_FILE.value + 1))
    over(limits.LEASE_FILE, raises(lambda: load_leases(str(path))))


def test_config_size(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    text = "on_error: block\n"
    path.write_text(text + "#" * (limits.CONFIG_FILE.value - len(text) - 1) + "\n")
    assert load_config(str(path)).on_error == "block"
    path.write_text(text + "#" * (limits.CONFIG_FILE.value - len(text)) + "\n")
    over(limits.CONFIG_FILE, raises(lambda: load_config(str(path))))


# --- the YAML document ------------------------------------------------------------------------


def test_yaml_nodes(tmp_path: Path) -> None:
    """The root mapping, its key, the list: 3 nodes, and the list's items."""
    items = limits.YAML_NODES.value - 3
    assert len(yamlload.load(f"a: [{', '.join(['1'] * items)}]".encode(), "c.yaml")["a"]) == items  # type: ignore[index]
    over(limits.YAML_NODES, raises(lambda: yamlload.load(f"a: [{', '.join(['1'] * (items + 1))}]".encode(), "c")))


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    """Nine levels of ten aliases: 10**9 nodes once expanded; refused when level five is composed."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    message = over(limits.YAML_NODES, raises(lambda: load_config(str(path))))
    assert f"{path}: line " in message


def test_yaml_depth() -> None:
    depth = limits.YAML_DEPTH.value
    nested: list[object] = []
    for _ in range(depth - 1):
        nested = [nested]
    assert yamlload.load(b"[" * depth + b"]" * depth, "c") == nested
    over(limits.YAML_DEPTH, raises(lambda: yamlload.load(b"[" * (depth + 1) + b"]" * (depth + 1), "c")))


def test_a_recursive_alias_is_refused() -> None:
    assert_one_line(raises(lambda: yamlload.load(b"domains: &d {web1: *d}", "c")), "a recursive alias")


# --- what one domain declares -----------------------------------------------------------------


def test_forwards_per_domain() -> None:
    n = limits.FORWARDS.value
    assert len(plan_of(forwards_xml(n)).forwards) == n
    over(limits.FORWARDS, raises(lambda: parse_domain(forwards_xml(n + 1))))


def test_forwards_per_domain_count_config_and_metadata_together() -> None:
    half = limits.FORWARDS.value // 2
    document = {"domains": {"web1": [{"ranges": [{"start": 3000 + i}]} for i in range(half)]}}
    assert len(plan_of(forwards_xml(half), document).forwards) == 2 * half
    over(limits.FORWARDS, raises(lambda: plan_of(forwards_xml(half + 1), document)))
    too_many = {"domains": {"web1": [{"ranges": [{"start": 3000 + i}]} for i in range(limits.FORWARDS.value + 1)]}}
    over(limits.FORWARDS, raises(lambda: config(too_many)))


def test_ranges_per_domain() -> None:
    each = limits.RANGES.value // 4
    assert len(plan_of(forwards_xml(4, ranges_each=each)).forwards) == limits.RANGES.value
    over(limits.RANGES, raises(lambda: plan_of(forwards_xml(4, ranges_each=each + 1))))
    one = [{"start": 1000 + i} for i in range(limits.RANGES.value + 1)]
    over(limits.RANGES, raises(lambda: config({"domains": {"web1": [{"ranges": one}]}})))


def test_excluded_ranges_per_domain() -> None:
    def xml(excluded: int) -> bytes:
        cuts = ({"start": 10001 + 2 * i, "exclude": "yes"} for i in range(excluded))
        return domain_xml(portfwd(forward({}, {"start": 10000, "end": 20000}, *cuts)))

    n = limits.EXCLUDED.value
    assert len(plan_of(xml(n)).forwards) == n + 1  # n holes in one range: n + 1 pieces
    over(limits.EXCLUDED, raises(lambda: plan_of(xml(n + 1))))


def test_sources_per_forward() -> None:
    def xml(n: int) -> bytes:
        sources = ",".join(f"198.51.{i // 256}.{i % 256}/32" for i in range(n))
        return domain_xml(portfwd(forward({"source": sources}, {"start": 8080, "to": 80})))

    assert len(plan_of(xml(limits.SOURCES.value)).forwards[0].sources) == limits.SOURCES.value
    over(limits.SOURCES, raises(lambda: parse_domain(xml(limits.SOURCES.value + 1))))
    sources = [f"198.51.100.{i}/32" for i in range(limits.SOURCES.value + 1)]
    over(
        limits.SOURCES, raises(lambda: config({"domains": {"web1": [{"source": sources, "ranges": [{"start": 80}]}]}}))
    )


def test_rules_per_domain() -> None:
    """Every port of one protocol through a source network (the issue's worst input): 65,535 nft
    map elements and one rule, exactly the limit. A second source network is one too many."""

    def xml(sources: str) -> bytes:
        return domain_xml(portfwd(forward({"proto": "tcp", "source": sources}, {"start": 1, "end": 65535})))

    plan = plan_of(xml("0.0.0.0/0"))
    assert count_rules(plan.forwards) == limits.RULES.value
    over(limits.RULES, raises(lambda: plan_of(xml("0.0.0.0/1,128.0.0.0/1"))))


def test_domain_name_length() -> None:
    name = "n" * limits.NAME_BYTES.value
    assert parse_domain(domain_xml(name=name)).name == name
    assert_one_line(raises(lambda: parse_domain(domain_xml(name=name + "n"))), limits.NAME_BYTES.name)


# --- values: ports, names, addresses, interfaces -----------------------------------------------


@pytest.mark.parametrize(
    ("start", "why"),
    [
        ("017", "expected a port 1-65535 without a leading zero, got '017'"),
        ("9" * 5000, "expected a port 1-65535, got '99999"),
        ("8²", "expected a port 1-65535, got '8²'"),
        ("٨٠", "expected a port 1-65535, got '٨٠'"),
        ("65536", "expected a port 1-65535, got '65536'"),
        ("0", "expected a port 1-65535, got '0'"),
        ("+80", "expected a port 1-65535, got '+80'"),
    ],
)
def test_ports_are_ascii_decimal(start: str, why: str) -> None:
    xml = domain_xml(portfwd(forward({}, {"start": start})))
    assert_one_line(raises(lambda: parse_domain(xml)), "(metadata portForward[0].range[0].start)", why)


@pytest.mark.parametrize("text", ["ports: [017]", "ports: [0x50]", "ports: ['1_000']", "ports: [1:30]"])
def test_yaml_ports_are_decimal_not_octal_hex_or_sexagesimal(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"metadata:\n  {text}\n")
    assert_one_line(raises(lambda: load_config(str(path))), "metadata.ports[0]", "expected a port 1-65535")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("on_error: allow\non_error: block\n", "duplicate key 'on_error'"),
        ("domains:\n  web1: []\n  web1: []\n", "duplicate key 'web1'"),
        ("lease_wait: !!python/object/apply:os.system [id]\n", "could not determine a constructor"),
        ("metadata: {enabled: !!bool maybe}\n", "a value its tag cannot make"),
        ("lease_wait: !!float ten\n", "a value its tag cannot make"),
        ("lease_wait: !!timestamp x\n", "a value its tag cannot make"),
        ("lease_wait: !!int 017\n", "expected a decimal integer"),
        (f"lease_wait: {'9' * 5000}\n", "an integer of 5000 digits"),
        ("domains: {web1: [{proto: !!bool yes, ranges: [{start: 80}]}]}\n", "expected a string, got True"),
        ("domains: {web1: [{ranges: [{start: !!float 80}]}]}\n", "expected a port 1-65535, got 80.0"),
    ],
)
def test_yaml_is_strict_and_never_a_traceback(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert_one_line(raises(lambda: load_config(str(path))), str(path), needle)


def test_yaml_merge_keys_still_work() -> None:
    document = yamlload.load(b"base: &b {proto: tcp, ranges: [{start: 80}]}\nmine: {<<: *b, proto: udp}\n", "c")
    assert document == {
        "base": {"proto": "tcp", "ranges": [{"start": 80}]},
        "mine": {"proto": "udp", "ranges": [{"start": 80}]},
    }


@pytest.mark.parametrize("dev", ["-j", "--goto", "-jACCEPT", "eth0 -j ACCEPT", "eth0\n-A", "a" * 16])
def test_an_interface_name_that_looks_like_an_option_is_refused(dev: str) -> None:
    xml = domain_xml(portfwd(forward({"dev": dev})))
    assert_one_line(raises(lambda: parse_domain(xml)), "portForward[0].dev")
    assert_one_line(raises(lambda: config({"dev": dev})), "dev")


@pytest.mark.parametrize(
    "bridge", ["-j", "--goto", "virbr0 -j ACCEPT", "virbr0\n-A FORWARD -j ACCEPT", 'vir"br0', "br+"]
)
def test_a_bridge_name_from_libvirts_network_status_is_validated(bridge: str) -> None:
    assert_one_line(
        raises(lambda: parse_network(network_xml(bridge="BRIDGE").replace(b"BRIDGE", bridge.encode()))), "bridge name"
    )


def test_names_and_macs_with_newlines_are_refused() -> None:
    name = raises(lambda: parse_domain(domain_xml(name="web1\n-A FORWARD -j ACCEPT")))
    assert_one_line(name, "<name> holds a control character")
    mac = raises(lambda: parse_domain(domain_xml(nics=[nic(mac="52:54:00:6b:3c:01\n-j ACCEPT")])))
    assert_one_line(mac, "interface[0] mac", "expected a MAC address")
    net = raises(lambda: parse_network(network_xml(name="default\n-j ACCEPT")))
    assert_one_line(net, "<name> holds a control character")
    reservation = network_xml(hosts={"52:54:00:6b:3c:01 ": GUEST}).replace(b"3c:01 ", b"3c:01&#10;-j")
    assert_one_line(raises(lambda: parse_network(reservation)), "bad MAC")


def test_lease_entries_with_bad_macs_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "virbr0.status"
    entries = [
        {"ip-address": "192.168.122.60", "mac-address": f"{MAC1}\n-j ACCEPT", "expiry-time": 0},
        {"ip-address": GUEST, "mac-address": MAC1.upper(), "expiry-time": 0},
    ]
    path.write_text(json.dumps(entries))
    assert load_leases(str(path)) == {MAC1: IPv4Address(GUEST)}


def test_a_deeply_nested_lease_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "virbr0.status"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert_one_line(raises(lambda: load_leases(str(path))), "invalid lease file", "nested too deeply")


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("192.168.122.1", "the host's own address on network default (virbr0)"),
        ("192.168.122.0", "the network address of network default (192.168.122.0/24)"),
        ("192.168.122.255", "the broadcast address of network default (192.168.122.0/24)"),
    ],
)
def test_guest_address_is_never_the_hosts_nor_the_networks_nor_broadcast(address: str, why: str) -> None:
    xml = domain_xml(portfwd(forward({"guest-address": address})))
    error = raises(lambda: plan_of(xml, {"metadata": {"guest_address": True}}))
    assert_one_line(error, "(metadata portForward[0].guest-address)", f"guest-address {address} is {why}")
    assert [
        str(f.guest)
        for f in plan_of(
            xml.replace(address.encode(), b"192.168.122.254"), {"metadata": {"guest_address": True}}
        ).forwards
    ] == ["192.168.122.254"]


def test_a_lease_of_the_hosts_own_address_is_ignored() -> None:
    d = parse_domain(domain_xml(portfwd(forward())))
    plan = build_plan(d, d.specs, config(), networks(), lambda bridge: {MAC1: IPv4Address("192.168.122.1")})
    assert plan.waiting_macs == (MAC1,)


# --- what is in place of a file ---------------------------------------------------------------


@pytest.fixture
def specials(tmp_path: Path) -> dict[str, Path]:
    """A directory, a FIFO, a link to a device and a link to a FIFO, where files are expected."""
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "to-fifo").symlink_to(tmp_path / "fifo")
    return {name: tmp_path / name for name in ("dir", "fifo", "zero", "to-fifo")}


KINDS = {"dir": "a directory", "fifo": "a FIFO", "zero": "a character device", "to-fifo": "a FIFO"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_no_special_file_is_read_in_place_of_a_file(specials: dict[str, Path], kind: str) -> None:
    path = str(specials[kind])
    why = f"not a regular file ({KINDS[kind]})"
    assert_one_line(raises(lambda: load_leases(path)), "cannot read leases", path, why)
    assert_one_line(raises(lambda: load_config(path)), "cannot read config", path, why)
    assert_one_line(raises(lambda: limits.read_file(path, limits.DOMAIN_XML, "domain XML")), why)


def test_a_network_status_that_is_not_a_file_is_skipped_and_said(specials: dict[str, Path], tmp_path: Path) -> None:
    directory = tmp_path / "network"
    directory.mkdir()
    (directory / "default.xml").symlink_to("/dev/zero")
    networks_ = load_networks(str(directory))
    assert not networks_ and assert_one_line(networks_.refused["default"], "not a regular file (a character device)")


def test_a_network_directory_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "network").write_text("")
    assert_one_line(raises(lambda: load_networks(str(tmp_path / "network"))), "cannot read libvirt's networks")


def test_a_domain_xml_with_a_dtd_is_refused() -> None:
    xml = b'<!DOCTYPE domain [<!ENTITY a "b">]><domain><name>&a;</name><uuid>' + UUID.encode() + b"</uuid></domain>"
    assert_one_line(raises(lambda: parse_domain(xml)), "a <!DOCTYPE>")
