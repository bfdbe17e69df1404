"""The listening sockets of the network namespace we run in, and which of them a forward would
capture.

The sockets of the reading process's own network namespace: TCP sockets in state LISTEN, UDP
sockets that are bound and not connected (state CLOSE, no remote port). Each protocol is asked
of the kernel over netlink (sock_diag, sockdiag.py), which walks only those sockets; where that
fails in any way (no sock_diag, a refusal, an answer we cannot read, a timeout), it is read from
``/proc/net/{tcp,tcp6,udp,udp6}`` instead: the same sockets, at the cost of a walk over the
whole connection table for each file (several ms per tcp file on a large host).

An unconnected UDP socket on a port of the kernel's ephemeral range
(``net.ipv4.ip_local_port_range``) is a client's (a resolver's or dnsmasq's upstream query
socket): its replies belong to a connection it started, which conntrack gives to it past our
DNAT, and such sockets come and go with every query, so they are not counted (a forward would
otherwise be refused at random). SCTP endpoints are not read.

What a forward's claim (proto, address or every local address, ports) captures:

- a listener bound to loopback only (127.0.0.0/8, ``::1``, ``::ffff:127.x.y.z``): never. Our nat
  OUTPUT rule leaves 127.0.0.0/8 alone, and traffic from outside never reaches a loopback
  address; likewise a multicast or broadcast address, which is not local to our DNAT;
- a listener on a wildcard (``0.0.0.0``, ``::``) on the claim's protocol and one of its ports:
  always, whatever the claim's address (the forward takes that address's share of its traffic;
  a ``::`` socket with IPV6_V6ONLY gets no IPv4, but /proc/net cannot say so: it counts);
- a listener on a specific IPv4 address (a v4-mapped ``::ffff:a.b.c.d`` counts as ``a.b.c.d``):
  a claim on that address, or on no address (such a forward captures every local address);
- a listener on a specific IPv6 address: never (forwards are IPv4 only).

Our own forwards create no socket, so a live forward never conflicts with itself. libvirt's
dnsmasq is a real listener (DNS on the bridge address, 192.168.122.1:53 tcp and udp; DHCP on
udp 0.0.0.0:67): a forward of port 53 without an address would take the guests' DNS, and it is
refused like any other capture.

Parsing is pure (``parse_proc_net`` takes the file's text, ``sockdiag.parse_answer`` the
netlink answer's bytes); a /proc/net line that does not have the kernel's shape in every field
is skipped, never an error.
"""

import os
import re
import sys
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

from . import sockdiag
from .model import Claim
from .paths import EPHEMERAL_PORTS, PROC, PROC_NET

PROTOS = ("tcp", "udp")
FILES = {"tcp": ("tcp", "tcp6"), "udp": ("udp", "udp6")}  # proto -> its /proc/net files
STATES = {proto: state for proto, (_, state) in sockdiag.PROTOCOLS.items()}  # LISTEN, CLOSE (unconnected)
EPHEMERAL_DEFAULT = (32768, 60999)
OWNER_BUDGET = 0.25  # seconds spent at most looking for a socket's process

_HEX_ADDRESS = r"[0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}"
# One socket as the kernel prints it: sl, local, remote, st, tx:rx queue, tr:when, retrnsmt, uid,
# timeout, inode (what follows the inode differs between tcp and udp and is not read).
_LINE = re.compile(
    rf"^[ ]*[0-9]+:[ ]+(?P<local>{_HEX_ADDRESS}):(?P<lport>[0-9A-Fa-f]{{4}})"
    rf"[ ]+(?P<remote>{_HEX_ADDRESS}):(?P<rport>[0-9A-Fa-f]{{4}})[ ]+(?P<state>[0-9A-Fa-f]{{2}})"
    r"[ ]+[0-9A-Fa-f]{8}:[0-9A-Fa-f]{8}[ ]+[0-9A-Fa-f]{2}:[0-9A-Fa-f]{8}[ ]+[0-9A-Fa-f]{8}"
    r"[ ]+[0-9]{1,10}[ ]+-?[0-9]{1,10}[ ]+(?P<inode>[0-9]{1,20})(?:[ ]|$)",
    re.ASCII | re.MULTILINE,
)


@dataclass(frozen=True)
class Listener:
    """One listening socket: protocol, the address it is bound to, port, socket inode."""

    proto: str
    address: IPv4Address | IPv6Address
    port: int
    inode: int

    @property
    def ipv4(self) -> IPv4Address | None:
        """The IPv4 address it listens on (a v4-mapped IPv6 address unwrapped), or None."""
        if isinstance(self.address, IPv4Address):
            return self.address
        return self.address.ipv4_mapped

    def __str__(self) -> str:
        if isinstance(self.address, IPv4Address):
            host = str(self.address)
        else:  # a v4-mapped address as Python 3.13 writes it, on 3.11 too
            host = f"[::ffff:{self.ipv4}]" if self.ipv4 is not None else f"[{self.address}]"
        return f"{self.proto} {host}:{self.port}"


def parse_proc_net(text: str, proto: str, byteorder: Literal["little", "big"] = sys.byteorder) -> list[Listener]:
    """The listeners in one ``/proc/net/{tcp,tcp6,udp,udp6}`` text (``proto``: tcp or udp).

    Addresses are 32-bit words in the kernel's byte order (``byteorder``), ports plain hex numbers.
    The header and every line that is malformed in any field are skipped."""
    found = []
    for match in _LINE.finditer(text):
        local, remote = match["local"], match["remote"]
        port, peer_port = int(match["lport"], 16), int(match["rport"], 16)
        if int(match["state"], 16) != STATES[proto] or len(local) != len(remote) or not counts(proto, port, peer_port):
            continue
        found.append(Listener(proto, _address(local, byteorder), port, int(match["inode"])))
    return found


def counts(proto: str, port: int, peer_port: int) -> bool:
    """Is a socket in the wanted state (``STATES``) a listener? Bound to a port, and for UDP not
    connected (a connected socket only hears its peer). The same rule for both sources."""
    return port != 0 and (proto != "udp" or peer_port == 0)


def _address(digits: str, byteorder: Literal["little", "big"]) -> IPv4Address | IPv6Address:
    """A hex address as /proc/net prints it: each 32-bit word in the kernel's byte order."""
    raw = b"".join(int(digits[i : i + 8], 16).to_bytes(4, byteorder) for i in range(0, len(digits), 8))
    return IPv4Address(raw) if len(raw) == 4 else IPv6Address(raw)


def parse_port_range(text: str) -> tuple[int, int]:
    """``ip_local_port_range`` ("32768\\t60999"); the kernel's default if it is not two ports."""
    parts = text.split()
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 5 for p in parts):
        return EPHEMERAL_DEFAULT
    low, high = int(parts[0]), int(parts[1])
    return (low, high) if 1 <= low <= high <= 65535 else EPHEMERAL_DEFAULT


def servers(listeners: Iterable[Listener], ephemeral: tuple[int, int]) -> list[Listener]:
    """Without the UDP sockets on ephemeral ports (clients' query sockets; see the docstring)."""
    low, high = ephemeral
    return [s for s in listeners if s.proto != "udp" or not low <= s.port <= high]


def read_listeners(protos: Iterable[str] = PROTOS, proc_net: str = PROC_NET) -> tuple[Listener, ...]:
    """The listeners of this network namespace for ``protos`` (tcp, udp), sorted for ``captured``:
    each protocol asked over netlink, read from ``proc_net`` where that fails (the docstring)."""
    wanted = set(protos)
    found: list[Listener] = []
    for proto in PROTOS:
        if proto in wanted:
            found += read_proto(proto, proc_net)
    return sort(servers(found, parse_port_range(_read(EPHEMERAL_PORTS))))


def read_proto(proto: str, proc_net: str = PROC_NET) -> list[Listener]:
    """One protocol's listeners, unsorted, UDP clients included: netlink, else /proc/net."""
    try:
        return read_netlink(proto)
    except (OSError, sockdiag.SockDiagError):
        return read_proc_net(proto, proc_net)


def read_netlink(proto: str) -> list[Listener]:
    """One protocol's listeners as sock_diag reports them (raises what ``sockdiag`` raises)."""
    return [
        Listener(proto, s.address, s.port, s.inode)
        for s in sockdiag.read_sockets(proto)
        if counts(proto, s.port, s.peer_port)
    ]


def read_proc_net(proto: str, proc_net: str = PROC_NET) -> list[Listener]:
    """One protocol's listeners from its /proc/net files. A file that cannot be read (no IPv6 in
    the kernel) holds none."""
    found: list[Listener] = []
    for name in FILES[proto]:
        found += parse_proc_net(_read(os.path.join(proc_net, name)), proto)
    return found


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def sort(listeners: Iterable[Listener]) -> tuple[Listener, ...]:
    """By port, then IPv4 before IPv6, then address: the order ``captured`` needs and reports in."""
    return tuple(sorted(listeners, key=lambda s: (s.port, s.proto, s.address.version, int(s.address))))


def captures(claim: Claim, listener: Listener) -> bool:
    """Would a forward with this claim take traffic from ``listener``? (the module docstring)"""
    if listener.proto != claim.proto or not claim.start <= listener.port <= claim.end:
        return False
    ipv4 = listener.ipv4
    if listener.address.is_unspecified or (ipv4 is not None and ipv4.is_unspecified):
        return True
    if ipv4 is None or ipv4.is_loopback or ipv4.is_multicast or ipv4 == IPv4Address("255.255.255.255"):
        return False  # a specific IPv6 address (forwards are IPv4 only), or not a local address
    return claim.address is None or claim.address == ipv4


def captured(claim: Claim, listeners: Sequence[Listener]) -> list[Listener]:
    """The listeners (sorted by ``sort``) that a forward with this claim would capture."""
    first = bisect_left(listeners, claim.start, key=lambda s: s.port)
    found = []
    for listener in listeners[first:]:
        if listener.port > claim.end:
            break
        if captures(claim, listener):
            found.append(listener)
    return found


def owner(inode: int, proc: str = PROC, budget: float = OWNER_BUDGET) -> str | None:
    """Best effort: ``"sshd (pid 812)"``, the first process holding the socket, or None (not
    found within ``budget`` seconds, or not ours to see: another user's processes need root)."""
    if inode <= 0:
        return None
    target = f"socket:[{inode}]"
    deadline = time.monotonic() + budget
    try:
        pids = [e.name for e in os.scandir(proc) if e.name.isascii() and e.name.isdigit()]
    except OSError:
        return None
    for pid in pids:
        if time.monotonic() > deadline:
            return None
        if _holds(os.path.join(proc, pid, "fd"), target):
            return f"{_comm(os.path.join(proc, pid, 'comm'))} (pid {pid})"
    return None


def _holds(fd_dir: str, target: str) -> bool:
    try:
        with os.scandir(fd_dir) as fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) == target:
                        return True
                except OSError:
                    continue
    except OSError:
        return False
    return False


def _comm(path: str) -> str:
    """A process's name, printable (a process may name itself anything, a newline included)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(64).rstrip(b"\n")
    except OSError:
        return "?"
    return "".join(c if c.isprintable() and c.isascii() else "?" for c in raw.decode("ascii", "replace")) or "?"
