"""Listening sockets over netlink (sock_diag) against /proc/net, with real sockets in a fresh
network namespace (tests/data/ns_sockets.py binds them: wildcard, loopback, specific, v4-mapped
and dual-stack listeners, a connection's two ends, a bound socket that never listened, UDP
servers, a connected UDP socket and one on an ephemeral port): both readers see the same
sockets with the same inodes, also when the answer spans several datagrams, and read_listeners
finds them over netlink without reading /proc/net, and from /proc/net when netlink fails."""

import json
from collections.abc import Iterator

import pytest

from tests.conftest import DATA, PYTHON, need_root
from tests.names import unique
from tests.netns.conftest import sh

pytestmark = pytest.mark.netns

# Every socket in the wanted state (TCP LISTEN, UDP bound and unconnected), as listeners.sort
# orders them; read_listeners leaves out the last (a UDP socket on an ephemeral port).
EXPECTED = [
    "tcp 0.0.0.0:22",
    "tcp [::]:22",
    "udp 127.0.0.53:53",
    "udp 203.0.113.10:53",
    "udp 0.0.0.0:67",
    "tcp [2001:db8::1]:443",
    "udp [2001:db8::1]:443",
    "tcp 127.0.0.1:631",
    "tcp [::1]:631",
    "udp [::]:5353",
    "udp [::ffff:127.0.0.1]:7000",
    "tcp [::]:8080",
    "tcp 203.0.113.10:8443",
    "tcp [::ffff:203.0.113.10]:9000",
    "udp 0.0.0.0:45000",
]


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace: lo up, with the addresses ns_sockets.py binds to."""
    need_root()
    name = unique("pfsd")
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "addr", "add", "203.0.113.10/32", "dev", "lo")
        sh("ip", "-n", name, "addr", "add", "2001:db8::1/128", "dev", "lo", "nodad")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def views(netns: str, many: int = 0) -> dict[str, list[str]]:
    """What each reader sees in ``netns`` (ns_sockets.py read): "tcp 0.0.0.0:22 INODE" lines."""
    argv = ["ip", "netns", "exec", netns, PYTHON, str(DATA / "ns_sockets.py"), "read", str(many)]
    return json.loads(sh(*argv, timeout=60))  # type: ignore[no-any-return]


def names(lines: list[str]) -> list[str]:
    return [line.rsplit(" ", 1)[0] for line in lines]


def test_netlink_and_proc_net_see_the_same_listeners(netns: str) -> None:
    seen = views(netns)
    assert seen["netlink"] == seen["proc"]  # inodes included
    assert names(seen["netlink"]) == EXPECTED
    assert seen["auto"] == seen["netlink"][:-1] and seen["auto_proc_reads"] == 0


def test_an_answer_of_many_datagrams(netns: str) -> None:
    """600 more listeners: about 75 KB of answer, more than one datagram holds."""
    seen = views(netns, 600)
    assert seen["netlink"] == seen["proc"]
    assert len(seen["netlink"]) == len(EXPECTED) + 600
    assert sum(line.startswith("tcp 127.0.0.1:2") for line in seen["netlink"]) == 600


def test_where_netlink_fails_read_listeners_reads_proc_net(netns: str) -> None:
    """No sock_diag cannot be had on this kernel: ns_sockets.py makes the netlink socket fail
    (EPROTONOSUPPORT), and read_listeners reads each protocol from /proc/net instead."""
    seen = views(netns)
    assert seen["fallback"] == seen["auto"] and names(seen["fallback"]) == EXPECTED[:-1]
    assert seen["fallback_proc_reads"] == 2  # tcp and udp
