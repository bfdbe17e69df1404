"""dnsmasq lease status files (/var/lib/libvirt/dnsmasq/<bridge>.status) -> MAC -> IPv4 address."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from libvirt_portfwd.errors import InputError
from libvirt_portfwd.leases import EXPIRY_MARGIN, lease_path, load_leases, next_expiry, read_leases

NOW = 1_800_000_000
MAC = "52:54:00:aa:bb:cc"


def write(tmp_path: Path, content: object) -> str:
    path = tmp_path / "virbr0.status"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def entry(mac: str, ip: str, expiry: object = NOW + 3600, **extra: object) -> dict[str, object]:
    return {"ip-address": ip, "mac-address": mac, "expiry-time": expiry, **extra}


def test_path_is_named_by_bridge() -> None:
    assert lease_path("/var/lib/libvirt/dnsmasq", "virbr0") == "/var/lib/libvirt/dnsmasq/virbr0.status"


def test_missing_and_empty_files_have_no_leases(tmp_path: Path) -> None:
    assert load_leases(str(tmp_path / "virbr9.status"), now=NOW) == {}
    assert load_leases(write(tmp_path, ""), now=NOW) == {}
    assert load_leases(write(tmp_path, "[]"), now=NOW) == {}


@pytest.mark.parametrize(
    ("expiry", "kept"),
    [
        (NOW - 1, False),
        (NOW, False),
        (NOW + EXPIRY_MARGIN - 1, False),
        (NOW + EXPIRY_MARGIN, True),
        (NOW + EXPIRY_MARGIN + 1, True),
        (0, True),  # an infinite lease
    ],
    ids=["expired", "expires-now", "within-the-margin", "at-the-margin", "valid", "infinite"],
)
def test_expiry_time(tmp_path: Path, expiry: int, kept: bool) -> None:
    """A lease counts until EXPIRY_MARGIN seconds before it runs out: the watcher, acting then,
    has removed a forward to it by its expiry time, before dnsmasq may give the address again."""
    leases = load_leases(write(tmp_path, [entry("52:54:00:00:00:01", "192.168.122.5", expiry)]), now=NOW)
    assert leases == ({"52:54:00:00:00:01": IPv4Address("192.168.122.5")} if kept else {})


def test_next_expiry_is_when_the_first_lease_stops_counting() -> None:
    other = "52:54:00:00:00:02"
    leases = [
        (MAC, IPv4Address("192.168.122.5"), NOW + 900),
        (MAC, IPv4Address("192.168.122.6"), NOW + 100),  # older, an earlier expiry: not the current one
        (other, IPv4Address("192.168.122.7"), NOW + 50),
        ("52:54:00:00:00:03", IPv4Address("192.168.122.8"), NOW + EXPIRY_MARGIN - 1),  # stopped counting already
    ]
    assert next_expiry(leases, {MAC}, now=NOW) == NOW + 900 - EXPIRY_MARGIN
    assert next_expiry(leases, {MAC, other}, now=NOW) == NOW + 50 - EXPIRY_MARGIN
    assert next_expiry(leases, {"52:54:00:00:00:03"}, now=NOW) is None
    assert next_expiry([(MAC, IPv4Address("192.168.122.5"), 0)], {MAC}, now=NOW) is None  # never expires


def test_latest_lease_of_a_mac_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            entry("52:54:00:00:00:01", "192.168.122.5", NOW + 100),
            entry("52:54:00:00:00:01", "192.168.122.6", NOW + 900),
            entry("52:54:00:00:00:01", "192.168.122.7", NOW + 500),
        ],
    )
    assert load_leases(path, now=NOW) == {"52:54:00:00:00:01": IPv4Address("192.168.122.6")}


def test_mac_is_lower_cased(tmp_path: Path) -> None:
    path = write(tmp_path, [entry("52:54:00:AB:CD:EF", "192.168.122.5")])
    assert load_leases(path, now=NOW) == {"52:54:00:ab:cd:ef": IPv4Address("192.168.122.5")}


def test_odd_entries_are_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            entry("52:54:00:00:00:01", "2001:db8::5"),  # DHCPv6
            entry("52:54:00:00:00:02", "not an address"),
            entry("52:54:00:00:00:03", "192.168.122.3", "soon"),
            {"ip-address": "192.168.122.4"},
            "garbage",
            entry("52:54:00:00:00:05", "192.168.122.5", hostname="web1", **{"client-id": "01:52:54:00:00:00:05"}),
        ],
    )
    assert load_leases(path, now=NOW) == {"52:54:00:00:00:05": IPv4Address("192.168.122.5")}


@pytest.mark.parametrize(
    ("content", "why"),
    [("[{", "not JSON: "), ('{"ip-address": "192.168.122.5"}', "expected a JSON list")],
)
def test_broken_file(tmp_path: Path, content: str, why: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(InputError) as caught:
        load_leases(path, now=NOW)
    message = str(caught.value)
    assert message.startswith(f"libvirt-portfwd: invalid lease file ({path}): {why}") and "\n" not in message


def test_lease_entries_keep_expired_ones_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "virbr0.status"
    path.write_text(
        json.dumps(
            [
                {"ip-address": "192.168.122.178", "mac-address": MAC.upper(), "expiry-time": NOW - 5},
                {"ip-address": "fe80::1", "mac-address": MAC, "expiry-time": NOW + 5},  # not IPv4: skipped
                {"ip-address": "192.168.122.179", "mac-address": MAC, "expiry-time": NOW + 5},
            ]
        )
    )
    first, second = IPv4Address("192.168.122.178"), IPv4Address("192.168.122.179")
    assert read_leases(str(path)) == [(MAC, first, NOW - 5), (MAC, second, NOW + 5)]
