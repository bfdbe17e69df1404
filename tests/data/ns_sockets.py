"""The sockets of the sock_diag tests, bound in a fresh network namespace (run inside it, as
root, with lo up and 203.0.113.10/32 and 2001:db8::1/128 on it); then what the listener readers
see, or the kernel's raw netlink answers.

Usage: ns_sockets.py read [MANY]   -> one JSON object: reader -> ["tcp 0.0.0.0:22 INODE", ...]
                                      (MANY more tcp listeners on 127.0.0.1 from port 20000)
       ns_sockets.py capture DIR   -> DIR/{tcp,udp}-{inet,inet6}.bin, each one dump's answer
                                      (and two refusals, see capture); prints what /proc/net
                                      shows of the same sockets
"""

import errno
import json
import socket
import struct
import sys
import time
from pathlib import Path
from unittest import mock

from libvirt_portfwd import listeners, sockdiag

A, A6 = "203.0.113.10", "2001:db8::1"
V4, V6 = socket.AF_INET, socket.AF_INET6
TCP, UDP = socket.SOCK_STREAM, socket.SOCK_DGRAM
UNKNOWN_PROTOCOL = 253  # reserved for experiments (RFC 3692): no inet_diag handler
# family, kind, address, port, IPV6_V6ONLY (None: not set), listen
SOCKETS = [
    (V4, TCP, "0.0.0.0", 22, None, True),  # sshd
    (V6, TCP, "::", 22, 1, True),
    (V4, TCP, "127.0.0.1", 631, None, True),  # cupsd
    (V6, TCP, "::1", 631, 1, True),
    (V4, TCP, A, 8443, None, True),  # with a connection accepted: its two ends are not listeners
    (V6, TCP, A6, 443, 1, True),
    (V6, TCP, f"::ffff:{A}", 9000, 0, True),  # v4-mapped
    (V6, TCP, "::", 8080, 0, True),  # dual stack
    (V4, TCP, A, 7777, None, False),  # bound, never listening
    (V4, UDP, "0.0.0.0", 67, None, False),  # dnsmasq's DHCP
    (V4, UDP, A, 53, None, False),
    (V4, UDP, "127.0.0.53", 53, None, False),  # a resolver stub
    (V6, UDP, "::", 5353, 0, False),
    (V6, UDP, "::ffff:127.0.0.1", 7000, 0, False),
    (V6, UDP, A6, 443, 1, False),
    (V4, UDP, "0.0.0.0", 45000, None, False),  # on an ephemeral port: a client's, to read_listeners
]


def bind(family: int, kind: int, address: str, port: int, v6only: int | None, listen: bool) -> socket.socket:
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if v6only is not None:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    sock.bind((address, port))
    if listen:
        sock.listen(8)
    return sock


def bind_all(many: int) -> list[socket.socket]:
    held = [bind(*spec) for spec in SOCKETS]
    client = socket.create_connection((A, 8443))  # tcp ESTABLISHED, both ends
    server, _ = held[4].accept()
    udp = bind(V4, UDP, A, 40000, None, False)
    udp.connect((A, 67))  # udp connected: it hears its peer only
    held += [client, server, udp]
    held += [bind(V4, TCP, "127.0.0.1", 20000 + i, None, True) for i in range(many)]
    return held


def shown(found: list[listeners.Listener]) -> list[str]:
    return [f"{s} {s.inode}" for s in listeners.sort(found)]


def read() -> dict[str, object]:
    """Each reader's view: netlink and /proc/net alone (every socket in the wanted state, UDP
    clients too), read_listeners as it runs, and read_listeners with netlink failing."""
    both = listeners.PROTOS
    views: dict[str, object] = {
        "netlink": shown([s for proto in both for s in listeners.read_netlink(proto)]),
        "proc": shown([s for proto in both for s in listeners.read_proc_net(proto)]),
    }
    with mock.patch.object(listeners, "read_proc_net", wraps=listeners.read_proc_net) as spy:
        views["auto"] = shown(list(listeners.read_listeners()))
        views["auto_proc_reads"] = spy.call_count
    failure = OSError(errno.EPROTONOSUPPORT, "Protocol not supported")
    with (
        mock.patch.object(sockdiag.socket, "socket", side_effect=failure),
        mock.patch.object(listeners, "read_proc_net", wraps=listeners.read_proc_net) as spy,
    ):
        views["fallback"] = shown(list(listeners.read_listeners()))
        views["fallback_proc_reads"] = spy.call_count
    return views


def capture(directory: Path) -> None:
    """Each dump's answer, and two refusals: a protocol inet_diag has no handler for (an
    NLMSG_DONE carrying -ENOENT) and a request cut short (an NLMSG_ERROR carrying -EINVAL)."""
    for proto, (protocol, state) in sockdiag.PROTOCOLS.items():
        for family, name in ((V4, "inet"), (V6, "inet6")):
            request = sockdiag.build_request(family, protocol, state, sockdiag.sequence(family, protocol))
            (directory / f"{proto}-{name}.bin").write_bytes(answer(request))
    unknown = sockdiag.build_request(V4, UNKNOWN_PROTOCOL, 7, sockdiag.sequence(V4, UNKNOWN_PROTOCOL))
    (directory / "unknown-protocol.bin").write_bytes(answer(unknown))
    short = sockdiag.build_request(V4, socket.IPPROTO_TCP, 10, sockdiag.sequence(V4, socket.IPPROTO_TCP))
    (directory / "short-request.bin").write_bytes(answer(struct.pack("=I", 24) + short[4:24]))
    print("\n".join(shown([s for proto in listeners.PROTOS for s in listeners.read_proc_net(proto)])))


def answer(request: bytes) -> bytes:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, sockdiag.NETLINK_SOCK_DIAG) as sock:
        return sockdiag.exchange(sock, request, time.monotonic() + 1)


def main() -> None:
    command, argument = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "0"
    held = bind_all(int(argument) if command == "read" else 0)
    if command == "read":
        print(json.dumps(read()))
    else:
        capture(Path(argument))
    for sock in held:
        sock.close()


if __name__ == "__main__":
    main()
