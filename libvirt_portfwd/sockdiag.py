"""The kernel's list of bound sockets over netlink (NETLINK_SOCK_DIAG, inet_diag): one dump
request per address family (SOCK_DIAG_BY_FAMILY with an ``inet_diag_req_v2``) for TCP sockets
in state LISTEN or UDP sockets in state CLOSE (bound, not connected). The kernel walks only
those sockets, not the whole connection table that a read of ``/proc/net/tcp`` costs.

Stdlib ``socket`` and ``struct`` only. Every field of the answer is checked: a message of
another type, sequence number, family or state, a length that does not fit, an answer that
ends before NLMSG_DONE or a kernel error is a ``SockDiagError``, never a partial answer; the
socket's own failures (no netlink, a timeout) are ``OSError``. listeners.py reads /proc/net
when either happens. Parsing is pure (``parse_answer`` takes the answer's bytes).
"""

import os
import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x001, 0x300
TCP_LISTEN, TCP_CLOSE = 10, 7  # TCP_CLOSE: the state inet_diag shows for a bound, unconnected UDP socket
PROTOCOLS = {"tcp": (socket.IPPROTO_TCP, TCP_LISTEN), "udp": (socket.IPPROTO_UDP, TCP_CLOSE)}
FAMILIES = (socket.AF_INET, socket.AF_INET6)
TIMEOUT = 0.25  # seconds for one protocol's answers (they take well under a millisecond)
BUFFER = 65536  # the kernel fills at most 32 KiB per datagram

Order = Literal["little", "big"]
HEADER_SIZE = 16  # struct nlmsghdr: length, type, flags, sequence, port id
REQUEST_SIZE = 56  # struct inet_diag_req_v2 with its struct inet_diag_sockid
MESSAGE_SIZE = 72  # struct inet_diag_msg; attributes may follow, none is read


class SockDiagError(Exception):
    """The kernel's answer is not one we can read, or says the request failed."""


@dataclass(frozen=True)
class DiagSocket:
    """One socket as inet_diag describes it: local address and port, the peer's port, inode."""

    address: IPv4Address | IPv6Address
    port: int
    peer_port: int
    inode: int


def read_sockets(proto: str, timeout: float = TIMEOUT) -> list[DiagSocket]:
    """The TCP listeners or the bound unconnected UDP sockets (``proto``) of this network
    namespace, IPv4 then IPv6. Raises ``SockDiagError`` or ``OSError``; waits ``timeout`` at most."""
    protocol, state = PROTOCOLS[proto]
    deadline = time.monotonic() + timeout
    found: list[DiagSocket] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as sock:
        for family in FAMILIES:
            seq = sequence(family, protocol)
            answer = exchange(sock, build_request(family, protocol, state, seq), deadline)
            found += parse_answer(answer, family, state, seq)
    return found


def sequence(family: int, protocol: int) -> int:
    """The sequence number of one request: fixed, so that captured answers parse the same."""
    return protocol << 8 | family


def build_request(family: int, protocol: int, state: int, seq: int, byteorder: Order = sys.byteorder) -> bytes:
    """A dump request for the sockets of ``family`` and ``protocol`` in ``state``."""
    order = _order(byteorder)
    header = struct.pack(
        f"{order}IHHII", HEADER_SIZE + REQUEST_SIZE, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
    )
    return header + struct.pack(f"{order}BBBBI48x", family, protocol, 0, 0, 1 << state)


def exchange(sock: socket.socket, request: bytes, deadline: float) -> bytes:
    """Send one request; the kernel's answer, every datagram up to the one that ends it (with
    NLMSG_DONE or NLMSG_ERROR). Each datagram must come from the kernel, whole, before ``deadline``."""
    sock.settimeout(max(deadline - time.monotonic(), 0.001))
    if sock.send(request) != len(request):
        raise SockDiagError("the request was cut short")
    chunks: list[bytes] = []
    while not chunks or not _ends(chunks[-1]):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SockDiagError("no complete answer in time")
        sock.settimeout(remaining)
        chunks.append(_receive(sock))
    return b"".join(chunks)


def _receive(sock: socket.socket) -> bytes:
    data, _, flags, sender = sock.recvmsg(BUFFER)
    if flags & socket.MSG_TRUNC:
        raise SockDiagError(f"a datagram longer than {BUFFER} bytes")
    if not isinstance(sender, tuple) or not sender or sender[0] != 0:
        raise SockDiagError(f"a datagram from {sender!r}, not from the kernel")
    if not data:
        raise SockDiagError("an empty datagram")
    return data


def _ends(data: bytes) -> bool:
    """Does this datagram hold the message that ends the answer?"""
    return any(kind in (NLMSG_DONE, NLMSG_ERROR) for kind, _, _ in messages(data))


def messages(data: bytes, byteorder: Order = sys.byteorder) -> Iterator[tuple[int, int, bytes]]:
    """Each netlink message of ``data``: type, sequence number, payload. A header or length
    that does not fit in ``data`` is a ``SockDiagError``."""
    order = _order(byteorder)
    offset = 0
    while offset < len(data):
        if len(data) - offset < HEADER_SIZE:
            raise SockDiagError(f"a message header cut short at byte {offset} of {len(data)}")
        length, kind, _flags, seq, _port = struct.unpack_from(f"{order}IHHII", data, offset)
        if not HEADER_SIZE <= length <= len(data) - offset:
            raise SockDiagError(f"a message of {length} bytes at byte {offset} of {len(data)}")
        yield kind, seq, data[offset + HEADER_SIZE : offset + length]
        offset += (length + 3) & ~3  # NLMSG_ALIGN


def parse_answer(data: bytes, family: int, state: int, seq: int, byteorder: Order = sys.byteorder) -> list[DiagSocket]:
    """The sockets in the kernel's whole answer to request ``seq`` (``family``, ``state``), which
    must end with NLMSG_DONE; what follows that is not read."""
    found: list[DiagSocket] = []
    for kind, number, payload in messages(data, byteorder):
        if number != seq:
            raise SockDiagError(f"a message of request {number}, not {seq}")
        if kind == NLMSG_DONE:
            _check_status(payload, "NLMSG_DONE", byteorder)
            return found
        if kind == NLMSG_ERROR:
            _check_status(payload, "NLMSG_ERROR", byteorder)
            raise SockDiagError("an NLMSG_ERROR that reports no error")  # an ack: never asked for
        if kind != SOCK_DIAG_BY_FAMILY:
            raise SockDiagError(f"a message of type {kind}")
        found.append(parse_socket(payload, family, state, byteorder))
    raise SockDiagError("the answer ends before NLMSG_DONE")


def _check_status(payload: bytes, what: str, byteorder: Order) -> None:
    """The status an NLMSG_DONE or NLMSG_ERROR carries (0, or minus an errno) must be 0."""
    if len(payload) < 4:
        raise SockDiagError(f"{what} of {len(payload)} bytes")
    (status,) = struct.unpack_from(f"{_order(byteorder)}i", payload)
    if status != 0:
        reason = os.strerror(-status) if -4096 < status < 0 else f"status {status}"  # errno values < 4096
        raise SockDiagError(f"the kernel answered {what}: {reason}")


def parse_socket(payload: bytes, family: int, state: int, byteorder: Order = sys.byteorder) -> DiagSocket:
    """One ``struct inet_diag_msg``: it must be of ``family`` and in ``state`` (all we asked for)."""
    if len(payload) < MESSAGE_SIZE:
        raise SockDiagError(f"a socket of {len(payload)} bytes, not {MESSAGE_SIZE}")
    if payload[0] != family or payload[1] != state:
        raise SockDiagError(f"a socket of family {payload[0]} in state {payload[1]}, not {family} in {state}")
    port, peer_port = struct.unpack_from(">HH", payload, 4)  # inet_diag_sockid: network byte order
    local, peer = payload[8:24], payload[24:40]
    (inode,) = struct.unpack_from(f"{_order(byteorder)}I", payload, 68)
    if family == socket.AF_INET6:
        return DiagSocket(IPv6Address(local), port, peer_port, inode)
    if any(local[4:]) or any(peer[4:]):
        raise SockDiagError("an IPv4 socket with more than 4 bytes of address")
    return DiagSocket(IPv4Address(local[:4]), port, peer_port, inode)


def _order(byteorder: Order) -> str:
    return "<" if byteorder == "little" else ">"
