"""Host ports in use: /proc/net parsed from captured text, what a forward's claim captures, the
refusal and its one line, and host_ports.allow."""

from __future__ import annotations

import os
import socket
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest

from libvirt_portfwd import listeners
from libvirt_portfwd.errors import ConflictError
from libvirt_portfwd.listeners import Listener, captured, captures, parse_port_range, parse_proc_net, servers, sort
from libvirt_portfwd.model import Claim
from libvirt_portfwd.plan import check_listeners

from .helpers import CONFIG_PATH, config, domain, forward
from .test_plan import plan_of

# Captured on a little-endian host (x86-64) from a namespace where these were bound: sshd-like
# 0.0.0.0:22 and [::]:22 (IPV6_V6ONLY), cups-like 127.0.0.1:631 and [::1]:631, dnsmasq-like
# 192.168.122.1:53 (tcp and udp) and 0.0.0.0:67 (udp), a listener on 203.0.113.10:8443 with one
# connection accepted (both ends shown, state 01), [2001:db8::1]:443, a v4-mapped
# [::ffff:203.0.113.10]:9000, a resolver stub on 127.0.0.53:53, a connected UDP socket
# (203.0.113.10:40000 -> :67), [::]:5353 udp (dual stack) and [::ffff:127.0.0.1]:7000 udp.
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3848107 1 000000006a2a6193 100 0 0 10 0
   1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3848108 1 00000000a5c6565b 100 0 0 10 0
   2: 017AA8C0:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3848109 1 0000000013b7ea2b 100 0 0 10 0
   3: 0A7100CB:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3848111 1 0000000050beb21c 100 0 0 10 0
   4: 0A7100CB:D6F8 0A7100CB:20FB 01 00000000:00000000 00:00000000 00000000     0        0 3848112 2 00000000130c24fe 20 0 0 10 -1
   5: 0A7100CB:20FB 0A7100CB:D6F8 01 00000000:00000000 00:00000000 00000000     0        0 3848113 1 00000000f8b421e7 20 0 0 10 -1
"""  # noqa: E501
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3848114 1 00000000162f0715 100 0 0 10 0
   1: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3848116 1 000000009d00b8cd 100 0 0 10 0
   2: 00000000000000000000000001000000:0277 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3848115 1 00000000f0edfee5 100 0 0 10 0
   3: 0000000000000000FFFF00000A7100CB:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3848117 1 0000000035d70cb7 100 0 0 10 0
"""  # noqa: E501
UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 2759: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3848120 2 00000000945ca542 0
 2759: 017AA8C0:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3848119 2 00000000f63d905b 0
 2773: 00000000:0043 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3848118 2 0000000045fbf49e 0
 9938: 0A7100CB:9C40 0A7100CB:0043 01 00000000:00000000 00:00000000 00000000     0        0 3848121 2 00000000da8028f4 0
"""
UDP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 8059: 00000000000000000000000000000000:14E9 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3848122 2 0000000029ed89f9 0
 9706: 0000000000000000FFFF00000100007F:1B58 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3848123 2 0000000066716e86 0
"""  # noqa: E501


def parsed(text: str, proto: str) -> list[tuple[str, str, int, int]]:
    return [(s.proto, str(s.address), s.port, s.inode) for s in parse_proc_net(text, proto, "little")]


def listener(text: str) -> Listener:
    """``"tcp 0.0.0.0:22"``, ``"udp [::]:5353"``."""
    proto, endpoint = text.split()
    host, _, port = endpoint.rpartition(":")
    return Listener(proto, ip_address(host.strip("[]")), int(port), 0)


HOST = sort(
    [
        *parse_proc_net(TCP, "tcp", "little"),
        *parse_proc_net(TCP6, "tcp", "little"),
        *parse_proc_net(UDP, "udp", "little"),
        *parse_proc_net(UDP6, "udp", "little"),
    ]
)
A = IPv4Address("203.0.113.10")
B = IPv4Address("203.0.113.11")


# --- parsing ------------------------------------------------------------------------------


def test_tcp_listeners_only_in_state_listen() -> None:
    assert parsed(TCP, "tcp") == [
        ("tcp", "0.0.0.0", 22, 3848107),
        ("tcp", "127.0.0.1", 631, 3848108),
        ("tcp", "192.168.122.1", 53, 3848109),
        ("tcp", "203.0.113.10", 8443, 3848111),  # and not its two connected ends
    ]


def test_tcp6_listeners_with_a_v4_mapped_address() -> None:
    assert parsed(TCP6, "tcp") == [
        ("tcp", "::", 22, 3848114),
        ("tcp", "2001:db8::1", 443, 3848116),
        ("tcp", "::1", 631, 3848115),
        ("tcp", str(IPv6Address("::ffff:203.0.113.10")), 9000, 3848117),
    ]
    mapped = parse_proc_net(TCP6, "tcp", "little")[3]
    assert mapped.ipv4 == A and str(mapped) == "tcp [::ffff:203.0.113.10]:9000"


def test_udp_bound_unconnected_sockets() -> None:
    assert parsed(UDP, "udp") == [
        ("udp", "127.0.0.53", 53, 3848120),
        ("udp", "192.168.122.1", 53, 3848119),
        ("udp", "0.0.0.0", 67, 3848118),  # and not the connected 203.0.113.10:40000
    ]
    assert parsed(UDP6, "udp") == [
        ("udp", "::", 5353, 3848122),
        ("udp", str(IPv6Address("::ffff:127.0.0.1")), 7000, 3848123),
    ]


def test_big_endian_words() -> None:
    """The words are in the kernel's byte order: on a big-endian host 127.0.0.1 is 7F000001."""
    line = (
        "   0: 7F000001:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1 0 100 0 0 10 0"
    )
    assert [str(s.address) for s in parse_proc_net(line, "tcp", "little")] == ["1.0.0.127"]
    assert [str(s.address) for s in parse_proc_net(line, "tcp", "big")] == ["127.0.0.1"]


GOOD = (
    "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1065 1 0 100 0 0 10 0"
)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "garbage",
        GOOD.replace("0:", "x:", 1),  # slot
        GOOD.replace("00000000:0016", "0000000:0016", 1),  # 7 hex digits
        GOOD.replace("00000000:0016", "000000000:0016", 1),  # 9
        GOOD.replace(":0016", ":016", 1),  # port of 3 digits
        GOOD.replace(":0016", ":001G", 1),  # not hex
        GOOD.replace(":0016", ":0000", 1),  # port 0
        GOOD.replace("00000000:0000 0A", "00000000000000000000000000000000:0000 0A", 1),  # families mixed
        GOOD.replace(" 0A ", " 0A0 ", 1),  # state
        GOOD.replace(" 1065 ", " -1065 ", 1),  # inode
        GOOD.replace(" 1065 ", " 1O65 ", 1),
        GOOD.replace(" 1065 ", " \u0661065 ", 1),  # a non-ASCII digit
        GOOD.replace(" 1065 ", " 123456789012345678901 ", 1),  # 21 digits
        GOOD.split(" 1065 ")[0],  # cut before the inode
        GOOD.replace("00000000:0016", "00000000 0016", 1),
        GOOD.replace(" ", "\t"),
        "\x00" * 200,
    ],
)
def test_malformed_lines_are_skipped(line: str) -> None:
    assert parse_proc_net(f"{line}\n{GOOD}\n{line}", "tcp", "little") == parse_proc_net(GOOD, "tcp", "little")


def test_a_line_never_runs_into_the_next() -> None:
    """The fields of one socket are on one line: a line cut short does not borrow the next one's."""
    head, tail = GOOD.split(" 0A ")
    assert parse_proc_net(f"{head}\n 0A {tail}", "tcp", "little") == []


def test_ephemeral_port_range() -> None:
    assert parse_port_range("32768\t60999\n") == (32768, 60999)
    assert parse_port_range("1024 65535") == (1024, 65535)
    for bad in ("", "x y", "60999 32768", "0 10", "1 70000", "1", "1 2 3", "\u0661 2"):
        assert parse_port_range(bad) == listeners.EPHEMERAL_DEFAULT


def test_udp_sockets_on_ephemeral_ports_are_clients() -> None:
    found = [listener("udp 0.0.0.0:40000"), listener("udp 0.0.0.0:5353"), listener("tcp 0.0.0.0:40000")]
    assert servers(found, (32768, 60999)) == [found[1], found[2]]


def test_read_listeners_of_this_namespace_sees_a_real_socket() -> None:
    """The files of the namespace we run in (no root needed): a socket of ours is among them."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        found = [s for s in listeners.read_listeners() if s.port == port and s.proto == "tcp"]
        assert [str(s.address) for s in found] == ["127.0.0.1"]
        assert listeners.owner(found[0].inode) == f"{Path('/proc/self/comm').read_text().strip()} (pid {os.getpid()})"
    assert listeners.read_proc_net("tcp", proc_net="/nonexistent") == []


def test_owner_unknown() -> None:
    assert listeners.owner(0) is None
    assert listeners.owner(1 << 62) is None  # no such socket
    assert listeners.owner(1, proc="/nonexistent") is None


# --- what a claim captures ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        # no address: every local address; loopback and specific IPv6 listeners are never taken
        (Claim("tcp", None, 22, 22), ["tcp 0.0.0.0:22", "tcp [::]:22"]),
        (Claim("tcp", None, 631, 631), []),  # 127.0.0.1 and ::1 only
        (Claim("tcp", None, 53, 53), ["tcp 192.168.122.1:53"]),  # libvirt's dnsmasq: the guests' DNS
        (Claim("udp", None, 53, 53), ["udp 192.168.122.1:53"]),  # but not the stub on 127.0.0.53
        (Claim("udp", None, 67, 67), ["udp 0.0.0.0:67"]),
        (Claim("tcp", None, 443, 443), []),  # [2001:db8::1] only
        (Claim("tcp", None, 9000, 9000), ["tcp [::ffff:203.0.113.10]:9000"]),
        (Claim("udp", None, 7000, 7000), []),  # ::ffff:127.0.0.1
        (Claim("udp", None, 5353, 5353), ["udp [::]:5353"]),
        # a specific address: wildcard listeners, and listeners on that same address
        (Claim("tcp", A, 22, 22), ["tcp 0.0.0.0:22", "tcp [::]:22"]),
        (Claim("tcp", A, 53, 53), []),  # dnsmasq is on 192.168.122.1, the forward on A
        (Claim("tcp", A, 8443, 8443), ["tcp 203.0.113.10:8443"]),
        (Claim("tcp", B, 8443, 8443), []),
        (Claim("tcp", A, 9000, 9000), ["tcp [::ffff:203.0.113.10]:9000"]),
        (Claim("tcp", B, 9000, 9000), []),
        # the protocol and the port range
        (Claim("udp", None, 22, 22), []),
        (Claim("sctp", None, 22, 22), []),
        (Claim("tcp", None, 54, 630), []),  # [2001:db8::1]:443 only
        (
            Claim("tcp", None, 1, 65535),
            [
                "tcp 0.0.0.0:22",
                "tcp [::]:22",
                "tcp 192.168.122.1:53",
                "tcp 203.0.113.10:8443",
                "tcp [::ffff:203.0.113.10]:9000",
            ],
        ),
        (Claim("tcp", None, 54, 65535), ["tcp 203.0.113.10:8443", "tcp [::ffff:203.0.113.10]:9000"]),
    ],
)
def test_captured(claim: Claim, expected: list[str]) -> None:
    assert [str(s) for s in captured(claim, HOST)] == expected


@pytest.mark.parametrize(
    "text",
    ["tcp 127.1.2.3:80", "tcp 224.0.0.251:80", "tcp 255.255.255.255:80", "tcp [fe80::1]:80", "tcp [::1]:80"],
)
def test_never_captured(text: str) -> None:
    for address in (None, A):
        assert not captures(Claim("tcp", address, 80, 80), listener(text))


@pytest.mark.parametrize("text", ["tcp 0.0.0.0:80", "tcp [::]:80", "tcp [::ffff:0.0.0.0]:80"])
def test_wildcards_are_captured_by_any_address(text: str) -> None:
    for address in (None, A, B):
        assert captures(Claim("tcp", address, 80, 80), listener(text))


# --- the refusal --------------------------------------------------------------------------


def refusal(d: object, cfg: object = None, owner: object = None) -> str:
    plan = plan_of(d)  # type: ignore[arg-type]
    with pytest.raises(ConflictError) as caught:
        check_listeners(plan, HOST, cfg or config(), owner or (lambda _inode: None))  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_forward_on_a_port_sshd_listens_on_is_refused() -> None:
    names = {3848107: "sshd (pid 812)"}
    assert refusal(domain(forward({}, {"start": 22})), owner=names.get) == (
        "libvirt-portfwd: web1: host port in use (metadata portForward[0]): tcp *:22 would capture "
        "tcp 0.0.0.0:22, where sshd (pid 812) listens: stop that process, "
        f"or allow tcp/22 in host_ports.allow ({CONFIG_PATH})"
    )


def test_a_forward_of_dns_without_an_address_would_take_the_guests_dns() -> None:
    """libvirt's dnsmasq on the bridge address is a real listener: a forward of udp 53 on every
    local address would DNAT the guests' own queries to 192.168.122.1:53 away. Refused; a
    forward of 53 on the public address alone does not touch dnsmasq and is not."""
    assert refusal(domain(forward({"proto": "udp"}, {"start": 53}))) == (
        "libvirt-portfwd: web1: host port in use (metadata portForward[0]): udp *:53 would capture "
        "udp 192.168.122.1:53, where a host process listens: stop that process, give the forward an address "
        f"other than 192.168.122.1, or allow udp/53 in host_ports.allow ({CONFIG_PATH})"
    )
    check_listeners(plan_of(domain(forward({"proto": "udp", "address": str(A)}, {"start": 53}))), HOST, config())


def test_the_first_forward_that_captures_is_named_with_how_many_more_ports() -> None:
    d = domain(forward({}, {"start": 2000, "to": 80}), forward({}, {"start": 1, "end": 100}))
    assert refusal(d) == (
        "libvirt-portfwd: web1: host port in use (metadata portForward[1]): tcp *:1-100 would capture "
        "tcp 0.0.0.0:22 (and 1 more port in use), where a host process listens: stop that process, or allow "
        f"tcp/22, tcp/53 in host_ports.allow ({CONFIG_PATH})"
    )
    wide = refusal(domain(forward({}, {"start": 1, "end": 10000})))
    assert "(and 3 more ports in use)" in wide and "or allow tcp/1-10000 in host_ports.allow" in wide


@pytest.mark.parametrize("allow", [[22], ["22"], ["tcp/22"], ["TCP/22"], ["1-1024"], ["udp/53", "tcp/20-30"], 22])
def test_allowed_ports_are_taken(allow: object) -> None:
    plan = plan_of(domain(forward({}, {"start": 22})))
    check_listeners(plan, HOST, config({"host_ports": {"allow": allow}}))


@pytest.mark.parametrize("allow", [["udp/22"], ["23-1024"], [], ["sctp/22"]])
def test_other_ports_or_protocols_allowed_are_not_enough(allow: object) -> None:
    message = refusal(domain(forward({}, {"start": 22})), config({"host_ports": {"allow": allow}}))
    assert "host port in use" in message


def test_a_listener_the_config_allows_is_skipped_and_the_next_one_named() -> None:
    cfg = config({"host_ports": {"allow": ["tcp/22"]}})
    message = refusal(domain(forward({}, {"start": 1, "end": 100})), cfg)
    assert "would capture tcp 192.168.122.1:53, where" in message and "allow tcp/53 in" in message


def test_nothing_captured_is_no_refusal() -> None:
    for d in (
        domain(forward({}, {"start": 631})),  # loopback only
        domain(forward({"address": str(B)}, {"start": 8443})),  # another address than the listener's
        domain(forward({}, {"start": 8080, "to": 22})),  # the guest port does not matter
    ):
        check_listeners(plan_of(d), HOST, config())
