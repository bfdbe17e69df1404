"""Listening sockets over netlink (sock_diag) without root: the kernel's answers captured in a
namespace (tests/data/sockdiag, little-endian x86-64, kernel 6.18) parsed, every truncation and
byte flip of them refused or read without a traceback, the read loop against a fake kernel, and
the fallback to /proc/net in this test's own namespace.

The captures come from ``tests/data/ns_sockets.py capture tests/data/sockdiag``, run as root in
a fresh namespace (lo up, 203.0.113.10/32 and 2001:db8::1/128 on it; tests/netns/test_sockdiag.py
sets one up): review the diff, then update the inodes below.
"""

from __future__ import annotations

import errno
import re
import socket
import struct
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from libvirt_portfwd import listeners, sockdiag
from libvirt_portfwd.listeners import Listener
from libvirt_portfwd.sockdiag import SockDiagError

CAPTURES = Path(__file__).resolve().parents[1] / "data" / "sockdiag"
V4, V6 = socket.AF_INET, socket.AF_INET6
TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP
FAMILY_NAMES = {V4: "inet", V6: "inet6"}
# What /proc/net showed of the same sockets at capture time (ns_sockets.py prints it), per answer.
EXPECTED = {
    ("tcp", V4): ["tcp 0.0.0.0:22 4221766", "tcp 127.0.0.1:631 4221768", "tcp 203.0.113.10:8443 4221770"],
    ("tcp", V6): [
        "tcp [::]:22 4221767",
        "tcp [2001:db8::1]:443 4221771",
        "tcp [::1]:631 4221769",
        "tcp [::]:8080 4221773",
        "tcp [::ffff:203.0.113.10]:9000 4221772",
    ],
    ("udp", V4): [
        "udp 127.0.0.53:53 4221777",
        "udp 203.0.113.10:53 4221776",
        "udp 0.0.0.0:67 4221775",
        "udp 0.0.0.0:45000 4221781",  # on an ephemeral port: read, then left out by servers()
    ],
    ("udp", V6): [
        "udp [2001:db8::1]:443 4221780",
        "udp [::]:5353 4221778",
        "udp [::ffff:127.0.0.1]:7000 4221779",
    ],
}
ANSWERS = sorted(EXPECTED)


def capture(proto: str, family: int) -> bytes:
    return (CAPTURES / f"{proto}-{FAMILY_NAMES[family]}.bin").read_bytes()


def request_of(proto: str, family: int) -> tuple[int, int, int]:
    """family, state, sequence number of the request the capture answers."""
    protocol, state = sockdiag.PROTOCOLS[proto]
    return family, state, sockdiag.sequence(family, protocol)


def parse(data: bytes, proto: str, family: int, byteorder: sockdiag.Order = "little") -> list[sockdiag.DiagSocket]:
    return sockdiag.parse_answer(data, *request_of(proto, family), byteorder)


def shown(proto: str, found: list[sockdiag.DiagSocket]) -> list[str]:
    return [f"{s} {s.inode}" for s in listeners.sort(Listener(proto, s.address, s.port, s.inode) for s in found)]


def message(kind: int, seq: int, payload: bytes) -> bytes:
    return struct.pack("<IHHII", 16 + len(payload), kind, 2, seq, 1475) + payload + bytes(-len(payload) % 4)


def done(seq: int, status: int = 0) -> bytes:
    return message(sockdiag.NLMSG_DONE, seq, struct.pack("<i", status))


def messages(data: bytes) -> list[tuple[int, int, bytes]]:
    return list(sockdiag.messages(data, "little"))


def first_message(data: bytes) -> bytes:
    """The first message of an answer, its padding included (all of ``data`` if it is shorter)."""
    return data[: (int.from_bytes(data[:4], "little") + 3) & ~3]


# --- the captured answers -----------------------------------------------------------------------


@pytest.mark.parametrize(("proto", "family"), ANSWERS)
def test_captured_answers_hold_what_proc_net_showed(proto: str, family: int) -> None:
    assert shown(proto, parse(capture(proto, family), proto, family)) == EXPECTED[proto, family]


def test_v4_mapped_loopback_and_wildcard_sockets_keep_their_meaning() -> None:
    """The same Listener as from /proc/net: a v4-mapped address unwraps, loopback stays loopback."""
    found = {s.port: Listener("tcp", s.address, s.port, s.inode) for s in parse(capture("tcp", V6), "tcp", V6)}
    assert str(found[9000]) == "tcp [::ffff:203.0.113.10]:9000" and found[9000].ipv4 == IPv4Address("203.0.113.10")
    assert found[8080].address.is_unspecified and found[631].address.is_loopback


def test_the_request_is_an_inet_diag_dump_of_one_family_protocol_and_state() -> None:
    request = sockdiag.build_request(V4, TCP, sockdiag.TCP_LISTEN, 1538, "little")
    # length, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, sequence, port id (the kernel's)
    assert struct.unpack("<IHHII", request[:16]) == (72, 20, 0x301, 1538, 0)
    # family, protocol, no extensions, padding, the states wanted; then any socket
    assert struct.unpack("<BBBBI", request[16:24]) == (V4, TCP, 0, 0, 1 << 10) and request[24:] == bytes(48)
    request = sockdiag.build_request(V6, UDP, sockdiag.TCP_CLOSE, 1, "big")
    assert struct.unpack(">IHHIIBBBBI", request[:24]) == (72, 20, 0x301, 1, 0, V6, UDP, 0, 0, 1 << 7)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("unknown-protocol", "NLMSG_DONE: No such file or directory"),  # no inet_diag handler for protocol 253
        ("short-request", "NLMSG_ERROR: Invalid argument"),  # a request of 24 bytes
    ],
)
def test_the_kernels_refusals_are_errors(name: str, reason: str) -> None:
    data = (CAPTURES / f"{name}.bin").read_bytes()
    seq = sockdiag.sequence(V4, 253 if name == "unknown-protocol" else TCP)
    with pytest.raises(SockDiagError, match=reason):
        sockdiag.parse_answer(data, V4, sockdiag.TCP_LISTEN, seq, "little")


def big_endian(data: bytes) -> bytes:
    """A little-endian answer as a big-endian host's kernel writes it: the header, and the
    socket's interface, cookie, timers, queues, uid and inode (the attributes are not read)."""
    swapped = b""
    for kind, seq, payload in messages(data):
        if kind == sockdiag.SOCK_DIAG_BY_FAMILY:
            words = b"".join(payload[i : i + 4][::-1] for i in range(40, 72, 4))
            payload = payload[:40] + words + payload[72:]
        swapped += struct.pack(">IHHII", 16 + len(payload), kind, 2, seq, 1475) + payload
    return swapped  # NLMSG_DONE's status is 0: the same bytes in either order


def test_big_endian_headers_and_inodes() -> None:
    """The netlink header and the inode are in the host's byte order, ports and addresses in the
    network's: the same answer from a big-endian host reads the same."""
    swapped = big_endian(capture("tcp", V4))
    assert shown("tcp", parse(swapped, "tcp", V4, "big")) == EXPECTED["tcp", V4]
    with pytest.raises(SockDiagError):
        parse(swapped, "tcp", V4, "little")


# --- answers we cannot read ---------------------------------------------------------------------


@pytest.mark.parametrize(("proto", "family"), ANSWERS)
def test_every_truncation_is_an_error(proto: str, family: int) -> None:
    data = capture(proto, family)
    for end in range(len(data)):
        with pytest.raises(SockDiagError):
            parse(data[:end], proto, family)


@pytest.mark.parametrize(("proto", "family"), ANSWERS)
def test_any_byte_changed_is_read_or_refused_never_a_traceback(proto: str, family: int) -> None:
    data = capture(proto, family)
    for offset in range(len(data)):
        for value in {0x00, 0xFF, data[offset] ^ 0x01, data[offset] ^ 0x80}:
            changed = data[:offset] + bytes([value]) + data[offset + 1 :]
            try:
                found = parse(changed, proto, family)
            except SockDiagError:
                continue
            assert all(0 <= s.port <= 65535 and s.address.version == (4 if family == V4 else 6) for s in found)


def first_socket(proto: str = "tcp", family: int = V4) -> bytearray:
    """The payload of the capture's first socket, to change."""
    return bytearray(messages(capture(proto, family))[0][2])


def seq_of(proto: str = "tcp", family: int = V4) -> int:
    return request_of(proto, family)[2]


def answer_with(payload: bytes, proto: str = "tcp", family: int = V4) -> bytes:
    return message(sockdiag.SOCK_DIAG_BY_FAMILY, seq_of(proto, family), payload) + done(seq_of(proto, family))


def changed(offset: int, value: bytes) -> bytes:
    payload = first_socket()
    payload[offset : offset + len(value)] = value
    return answer_with(bytes(payload))


SEQ = seq_of()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "ends before NLMSG_DONE"),
        (b"\x00" * 100, "a message of 0 bytes at byte 0"),
        (b"\xff" * 100, "a message of 4294967295 bytes"),
        (b"garbage", "header cut short at byte 0"),
        (answer_with(bytes(first_socket())), None),  # the unchanged socket: read
        (answer_with(bytes(first_socket()[:71])), "a socket of 71 bytes, not 72"),
        (answer_with(bytes(first_socket()[:72])), None),  # no attributes: read
        (changed(0, b"\x0a"), "a socket of family 10 in state 10, not 2 in 10"),
        (changed(1, b"\x01"), "a socket of family 2 in state 1, not 2 in 10"),  # ESTABLISHED: not asked for
        (changed(12, b"\x01"), "an IPv4 socket with more than 4 bytes of address"),
        (changed(39, b"\x01"), "an IPv4 socket with more than 4 bytes of address"),
        (message(sockdiag.SOCK_DIAG_BY_FAMILY, SEQ + 1, bytes(first_socket())) + done(SEQ), "request 1539, not 1538"),
        (message(1, SEQ, b"") + done(SEQ), "a message of type 1"),  # NLMSG_NOOP
        (message(16, SEQ, bytes(first_socket())) + done(SEQ), "a message of type 16"),  # RTM_NEWLINK
        (message(4, SEQ, b"") + done(SEQ), "a message of type 4"),  # NLMSG_OVERRUN
        (done(SEQ, -errno.EINTR), "NLMSG_DONE: Interrupted system call"),  # the dump was interrupted
        (done(SEQ, 7), "NLMSG_DONE: status 7"),
        (done(SEQ, -(2**31)), "NLMSG_DONE: status -2147483648"),
        (message(sockdiag.NLMSG_DONE, SEQ, b""), "NLMSG_DONE of 0 bytes"),
        (message(sockdiag.NLMSG_DONE, SEQ, b"\x00\x00"), "NLMSG_DONE of 2 bytes"),
        (message(sockdiag.NLMSG_ERROR, SEQ, struct.pack("<i", -errno.EPERM)), "NLMSG_ERROR: Operation not permitted"),
        (message(sockdiag.NLMSG_ERROR, SEQ, bytes(20)), "an NLMSG_ERROR that reports no error"),  # an ack
        (message(sockdiag.NLMSG_ERROR, SEQ, b"\xff"), "NLMSG_ERROR of 1 bytes"),
        (struct.pack("<IHHII", 15, 3, 0, SEQ, 0) + bytes(8), "a message of 15 bytes at byte 0"),
        (struct.pack("<IHHII", 40, 3, 0, SEQ, 0) + bytes(8), "a message of 40 bytes at byte 0 of 24"),
        (answer_with(bytes(first_socket()))[:-1], "a message of 20 bytes at byte 124 of 143"),
    ],
)
def test_malformed_answers(data: bytes, reason: str | None) -> None:
    if reason is None:
        assert shown("tcp", parse(data, "tcp", V4)) == ["tcp 203.0.113.10:8443 4221770"]
        return
    with pytest.raises(SockDiagError, match=re.escape(reason)):
        parse(data, "tcp", V4)


def test_the_answer_of_another_family_is_refused() -> None:
    with pytest.raises(SockDiagError, match="family 10 in state 10, not 2 in 10"):
        sockdiag.parse_answer(capture("tcp", V6), V4, sockdiag.TCP_LISTEN, seq_of("tcp", V6), "little")


def test_what_follows_nlmsg_done_is_not_read() -> None:
    data = capture("tcp", V4)
    assert parse(data + b"garbage", "tcp", V4) == parse(data, "tcp", V4)


def test_an_unbound_or_connected_socket_is_read_and_left_to_listeners() -> None:
    """sockdiag reports the ports as they are; listeners.counts drops what /proc/net drops too."""
    payload = first_socket("udp", V4)
    payload[6:8] = (67).to_bytes(2, "big")  # a peer port
    (found,) = parse(answer_with(bytes(payload), "udp", V4), "udp", V4)
    assert (found.port, found.peer_port) == (45000, 67)
    assert not listeners.counts("udp", found.port, found.peer_port)
    assert listeners.counts("tcp", found.port, found.peer_port)  # as /proc/net reads tcp
    assert not listeners.counts("tcp", 0, 0)


# --- the read loop, against a fake kernel -------------------------------------------------------


class FakeKernel:
    """A netlink socket that answers each dump request with its captured answer in two
    datagrams: the first socket's message, then the rest."""

    sender: tuple[int, int] = (0, 0)
    flags = 0
    answer: bytes | None = None  # the same answer to every request, instead of the captures

    def __init__(self, *_args: object) -> None:
        self.queue: list[bytes] = []
        self.timeouts: list[float] = []

    def __enter__(self) -> FakeKernel:
        return self

    def __exit__(self, *_exc: object) -> None:
        pass

    def settimeout(self, timeout: float) -> None:
        self.timeouts.append(timeout)

    def send(self, request: bytes) -> int:
        family, protocol = request[16], request[17]
        proto = {TCP: "tcp", UDP: "udp"}[protocol]
        data = capture(proto, family) if self.answer is None else self.answer
        first = len(first_message(data))
        self.queue += [data[:first], data[first:]] if first < len(data) else [data]
        return len(request)

    def recvmsg(self, _size: int) -> tuple[bytes, list[object], int, tuple[int, int]]:
        if not self.queue:
            raise TimeoutError("timed out")
        return self.queue.pop(0), [], self.flags, self.sender


@pytest.fixture
def kernel(mocker: MockerFixture) -> type[FakeKernel]:
    class Kernel(FakeKernel):
        pass

    mocker.patch.object(sockdiag.socket, "socket", Kernel)
    return Kernel


def test_read_sockets_asks_both_families(kernel: type[FakeKernel]) -> None:
    for proto in ("tcp", "udp"):
        expected = sorted(EXPECTED[proto, V4] + EXPECTED[proto, V6])
        assert sorted(shown(proto, sockdiag.read_sockets(proto))) == expected


@pytest.mark.parametrize(
    ("attribute", "value", "reason"),
    [
        ("sender", (4242, 0), r"a datagram from \(4242, 0\), not from the kernel"),
        ("flags", socket.MSG_TRUNC, "a datagram longer than 65536 bytes"),
        ("answer", b"", "an empty datagram"),
    ],
)
def test_a_datagram_not_from_the_kernel_or_not_whole_is_refused(
    kernel: type[FakeKernel], attribute: str, value: object, reason: str
) -> None:
    setattr(kernel, attribute, value)
    with pytest.raises(SockDiagError, match=reason):
        sockdiag.read_sockets("tcp")


def test_an_answer_that_stops_before_nlmsg_done_times_out(kernel: type[FakeKernel]) -> None:
    """No NLMSG_DONE and nothing more to read: the socket's timeout ends the wait."""
    kernel.answer = capture("tcp", V4)[:-20]
    with pytest.raises(TimeoutError):
        sockdiag.read_sockets("tcp")


def test_an_endless_stream_of_sockets_stops_at_the_deadline(mocker: MockerFixture) -> None:
    """Each wait is at most what is left until the deadline, and the loop ends there."""
    sock = mocker.Mock()
    sock.send.side_effect = len
    sock.recvmsg.return_value = (first_message(capture("tcp", V4)), [], 0, (0, 0))  # one socket, again and again
    with pytest.raises(SockDiagError, match="no complete answer in time"):
        sockdiag.exchange(sock, b"request", time.monotonic() + 0.02)
    assert all(0 < call.args[0] <= 0.02 for call in sock.settimeout.call_args_list)


# --- read_listeners: netlink first, /proc/net where it fails ------------------------------------


@pytest.fixture
def listening() -> tuple[socket.socket, str]:
    """A real listener in this test's own network namespace (no root needed)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, f"tcp 127.0.0.1:{sock.getsockname()[1]}"


def mine(found: tuple[Listener, ...], name: str) -> list[str]:
    return [str(s) for s in found if str(s) == name]


def test_netlink_is_asked_and_proc_net_not_read(listening: tuple[socket.socket, str], mocker: MockerFixture) -> None:
    sock, name = listening
    with sock:
        proc_net = mocker.spy(listeners, "read_proc_net")
        assert mine(listeners.read_listeners(("tcp",), proc_net="/nonexistent"), name) == [name]
        assert proc_net.call_count == 0


def refuse_socket(mocker: MockerFixture, code: int) -> None:
    mocker.patch.object(sockdiag.socket, "socket", side_effect=OSError(code, "refused"))


FAILURES: dict[str, Callable[[MockerFixture], object]] = {
    "no sock_diag": lambda m: refuse_socket(m, errno.EPROTONOSUPPORT),
    "no netlink": lambda m: refuse_socket(m, errno.EAFNOSUPPORT),
    "not permitted": lambda m: refuse_socket(m, errno.EACCES),
    "timeout": lambda m: m.patch.object(sockdiag, "_receive", side_effect=TimeoutError("timed out")),
    "malformed": lambda m: m.patch.object(sockdiag, "_receive", return_value=b"\x00" * 20),
    "refused": lambda m: m.patch.object(sockdiag, "_receive", return_value=done(0, -errno.ENOENT)),
    "wrong answer": lambda m: m.patch.object(sockdiag, "_receive", return_value=done(99)),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_where_netlink_fails_proc_net_is_read(
    listening: tuple[socket.socket, str], mocker: MockerFixture, failure: str
) -> None:
    sock, name = listening
    with sock:
        FAILURES[failure](mocker)
        proc_net = mocker.spy(listeners, "read_proc_net")
        assert mine(listeners.read_listeners(("tcp",)), name) == [name]
        assert [call.args[0] for call in proc_net.call_args_list] == ["tcp"]


def test_each_protocol_falls_back_alone(mocker: MockerFixture) -> None:
    """No udp_diag (a module not loaded): TCP still comes over netlink, UDP from /proc/net."""
    real = sockdiag.read_sockets

    def without_udp(proto: str) -> list[sockdiag.DiagSocket]:
        if proto == "udp":
            raise SockDiagError("the kernel answered NLMSG_DONE: No such file or directory")
        return real(proto)

    mocker.patch.object(sockdiag, "read_sockets", side_effect=without_udp)
    proc_net = mocker.spy(listeners, "read_proc_net")
    listeners.read_listeners()
    assert [call.args[0] for call in proc_net.call_args_list] == ["udp"]
