"""Forward specs: the one validator behind VM metadata and the YAML config.

Every bad value gives one line naming the key path and the value.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from libvirt_portfwd.errors import InputError
from libvirt_portfwd.forward import ForwardSpec, PortRange, parse_spec

from .helpers import config, domain, forward, spec


def error_of(values: dict[str, object], *ranges: dict[str, object]) -> str:
    with pytest.raises(InputError) as caught:
        parse_spec(values, list(ranges), "fw")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_minimal_spec_defaults() -> None:
    s = parse_spec({}, [{"start": "8080"}], "fw")
    assert s == ForwardSpec(
        proto="tcp",
        address=None,
        dev=None,
        sources=(),
        mac=None,
        guest_address=None,
        ranges=(PortRange(8080, 8080, 8080),),
        where="fw",
    )


def test_every_attribute() -> None:
    s = spec(
        {
            "proto": "UDP",
            "address": "203.0.113.10",
            "dev": "eth0",
            "source": "198.51.100.0/24, 192.0.2.0/25,198.51.100.0/24",
            "mac": "52:54:00:AB:CD:EF",
            "guest-address": "192.168.122.5",
        },
        {"start": "5000", "end": "5010", "to": "6000"},
    )
    assert s.proto == "udp"
    assert s.address == IPv4Address("203.0.113.10")
    assert s.dev == "eth0"
    assert s.sources == (IPv4Network("192.0.2.0/25"), IPv4Network("198.51.100.0/24"))  # sorted, deduplicated
    assert s.mac == "52:54:00:ab:cd:ef"
    assert s.guest_address == IPv4Address("192.168.122.5")
    assert s.ranges == (PortRange(5000, 5010, 6000),)
    assert s.ranges[0].to_end == 6010


@pytest.mark.parametrize("proto", ["tcp", "udp", "sctp", "SCTP", " tcp "])
def test_protocols(proto: str) -> None:
    assert spec({"proto": proto}).proto == proto.strip().lower()


def test_empty_optional_attributes_mean_unset() -> None:
    s = spec({"address": "", "dev": "", "source": "", "mac": "", "guest-address": ""})
    assert (s.address, s.dev, s.sources, s.mac, s.guest_address) == (None, None, (), None, None)


def test_yaml_integers_are_ports() -> None:
    assert spec({}, {"start": 80, "end": 81, "to": 8080}).ranges == (PortRange(80, 81, 8080),)


def test_single_port_and_boundaries() -> None:
    assert spec({}, {"start": "1"}, {"start": "65535"}).ranges == (PortRange(1, 1, 1), PortRange(65535, 65535, 65535))


def test_to_up_to_the_last_port() -> None:
    assert spec({}, {"start": 100, "end": 110, "to": 65525}).ranges[0].to_end == 65535


def test_exclude_values() -> None:
    s = spec({}, {"start": 1000, "end": 1100}, {"start": 1050, "exclude": "yes"}, {"start": 1060, "exclude": "no"})
    assert [r.exclude for r in s.ranges] == [False, True, False]
    assert spec({}, {"start": 1}, {"start": 1, "exclude": True}).ranges[1].exclude


@pytest.mark.parametrize(
    ("values", "ranges", "message"),
    [
        (
            {},
            [{"start": "80"}, {"start": "http"}],
            "libvirt-portfwd: invalid forward (fw.range[1].start): expected a port 1-65535, got 'http'",
        ),
        ({}, [{"start": "0"}], "invalid forward (fw.range[0].start): expected a port 1-65535, got '0'"),
        ({}, [{"start": "65536"}], "invalid forward (fw.range[0].start): expected a port 1-65535, got '65536'"),
        ({}, [{"start": "-1"}], "invalid forward (fw.range[0].start): expected a port 1-65535, got '-1'"),
        ({}, [{"start": ""}], "invalid forward (fw.range[0].start): expected a port 1-65535, got ''"),
        ({}, [{"start": "80.0"}], "invalid forward (fw.range[0].start): expected a port 1-65535, got '80.0'"),
        ({}, [{"start": 80.5}], "invalid forward (fw.range[0].start): expected a port 1-65535, got 80.5"),
        ({}, [{"start": True}], "invalid forward (fw.range[0].start): expected a port 1-65535, got True"),
        ({}, [{"start": "80", "end": "x"}], "invalid forward (fw.range[0].end): expected a port 1-65535, got 'x'"),
        (
            {},
            [{"start": "80", "to": "99999"}],
            "invalid forward (fw.range[0].to): expected a port 1-65535, got '99999'",
        ),
        ({}, [{"start": "90", "end": "80"}], "invalid forward (fw.range[0].end): is below start 90, got 80"),
        (
            {},
            [{"start": "100", "end": "110", "to": "65530"}],
            "invalid forward (fw.range[0].to): guest ports 65530-65540 run past 65535, got 65530",
        ),
        ({}, [{"end": "80"}], "invalid forward (fw.range[0]): missing 'start' (the first host port)"),
        ({}, [], "invalid forward (fw): no <range> (at least one port range is needed)"),
        (
            {},
            [{"start": "80", "exclude": "yes"}],
            "invalid forward (fw): every range is excluded: nothing to forward",
        ),
        (
            {},
            [{"start": "80"}, {"start": "81", "exclude": "maybe"}],
            "invalid forward (fw.range[1].exclude): expected yes or no, got 'maybe'",
        ),
        (
            {},
            [{"start": "80"}, {"start": "81", "exclude": "yes", "to": "90"}],
            "invalid forward (fw.range[1].to): an excluded range forwards nowhere, so it takes no 'to', got '90'",
        ),
        (
            {},
            [{"start": "80", "port": "90"}],
            "invalid forward (fw.range[0].port): unknown attribute (expected one of start, end, to, exclude), got '90'",
        ),
        ({"proto": "icmp"}, [{"start": "80"}], "invalid forward (fw.proto): expected tcp, udp or sctp, got 'icmp'"),
        ({"proto": 6}, [{"start": "80"}], "invalid forward (fw.proto): expected tcp, udp or sctp, got '6'"),
        ({"proto": ["tcp"]}, [{"start": "80"}], "invalid forward (fw.proto): expected a string, got ['tcp']"),
        (
            {"protocol": "tcp"},
            [{"start": "80"}],
            "invalid forward (fw.protocol): unknown attribute "
            "(expected one of proto, address, dev, source, mac, guest-address), got 'tcp'",
        ),
        (
            {"guest_address": "192.168.122.5"},
            [{"start": "80"}],
            "invalid forward (fw.guest_address): unknown attribute "
            "(expected one of proto, address, dev, source, mac, guest-address), got '192.168.122.5'",
        ),
        (
            {"address": "203.0.113.300"},
            [{"start": "80"}],
            "invalid forward (fw.address): expected an IPv4 address, got '203.0.113.300'",
        ),
        ({"address": "example.org"}, [{"start": "80"}], "(fw.address): expected an IPv4 address, got 'example.org'"),
        (
            {"address": "203.0.113.0/24"},
            [{"start": "80"}],
            "invalid forward (fw.address): expected an IPv4 address, got '203.0.113.0/24'",
        ),
        (
            {"address": "2001:db8::1"},
            [{"start": "80"}],
            "invalid forward (fw.address): IPv6 forwards are not supported, got '2001:db8::1'",
        ),
        (
            {"address": "0.0.0.0"},
            [{"start": "80"}],
            "invalid forward (fw.address): expected a unicast, non-loopback address, got '0.0.0.0'",
        ),
        (
            {"address": "127.0.0.1"},
            [{"start": "80"}],
            "invalid forward (fw.address): expected a unicast, non-loopback address, got '127.0.0.1'",
        ),
        (
            {"address": "224.0.0.1"},
            [{"start": "80"}],
            "invalid forward (fw.address): expected a unicast, non-loopback address, got '224.0.0.1'",
        ),
        (
            {"guest-address": "192.168.122"},
            [{"start": "80"}],
            "invalid forward (fw.guest-address): expected an IPv4 address, got '192.168.122'",
        ),
        (
            {"source": "198.51.100.7/24"},
            [{"start": "80"}],
            "invalid forward (fw.source): expected an IPv4 network such as 198.51.100.0/24 "
            "(198.51.100.7/24 has host bits set), got '198.51.100.7/24'",
        ),
        (
            {"source": "198.51.100.0/24,nowhere"},
            [{"start": "80"}],
            "invalid forward (fw.source): expected an IPv4 network such as 198.51.100.0/24 "
            "('nowhere' does not appear to be an IPv4 or IPv6 network), got 'nowhere'",
        ),
        (
            {"source": "2001:db8::/32"},
            [{"start": "80"}],
            "invalid forward (fw.source): IPv6 sources are not supported, got '2001:db8::/32'",
        ),
        (
            {"mac": "52-54-00-6b-3c-01"},
            [{"start": "80"}],
            "invalid forward (fw.mac): expected a MAC address such as 52:54:00:12:34:56, got '52-54-00-6b-3c-01'",
        ),
        (
            {"mac": "52:54:00:6b:3c"},
            [{"start": "80"}],
            "invalid forward (fw.mac): expected a MAC address such as 52:54:00:12:34:56, got '52:54:00:6b:3c'",
        ),
        (
            {"dev": "eth 0"},
            [{"start": "80"}],
            "invalid forward (fw.dev): expected a network interface name, got 'eth 0'",
        ),
        (
            {"dev": "a-very-long-interface"},
            [{"start": "80"}],
            "invalid forward (fw.dev): expected a network interface name, got 'a-very-long-interface'",
        ),
        ({"dev": ".."}, [{"start": "80"}], "invalid forward (fw.dev): expected a network interface name, got '..'"),
    ],
)
def test_bad_values_name_key_and_value(
    values: dict[str, object], ranges: list[dict[str, object]], message: str
) -> None:
    actual = error_of(values, *ranges)
    assert actual.startswith("libvirt-portfwd: invalid forward (")
    assert actual.endswith(message)


@pytest.mark.parametrize("dev", ["eth0", "enp3s0f1", "br-lan", "bond0.100", "wg0", "eth+", "veth1234567890ab"[:15]])
def test_interface_names(dev: str) -> None:
    assert spec({"dev": dev}).dev == dev


def test_overlaps() -> None:
    assert PortRange(80, 90, 80).overlaps(PortRange(90, 95, 90))
    assert not PortRange(80, 90, 80).overlaps(PortRange(91, 95, 91))


def test_same_message_from_metadata_and_config() -> None:
    """Both sources run the same validator; only the key path differs."""
    with pytest.raises(InputError) as from_metadata:
        domain(forward({"proto": "tcp"}, {"start": 80}, {"start": "http", "to": 80}))
    with pytest.raises(InputError) as from_config:
        config({"domains": {"web1": [{"proto": "tcp", "ranges": [{"start": 80}, {"start": "http", "to": 80}]}]}})
    assert str(from_metadata.value) == (
        "libvirt-portfwd: web1: invalid forward (metadata portForward[0].range[1].start): "
        "expected a port 1-65535, got 'http'"
    )
    assert str(from_config.value) == (
        "libvirt-portfwd: invalid forward (/etc/libvirt-portfwd/config.yaml: domains.web1[0].ranges[1].start): "
        "expected a port 1-65535, got 'http'"
    )


def test_superscript_digit_is_a_clean_error() -> None:
    with pytest.raises(InputError, match=r"expected a port 1-65535, got '²'"):
        parse_spec({}, [{"start": "²"}], "fw")
