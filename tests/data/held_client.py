"""Run inside the client namespace: hold one TCP connection or UDP flow open, use it on demand.

Usage: held_client.py tcp|udp HOST PORT TIMEOUT
Connects once (UDP: a connected socket, so one flow: the same client port throughout) and prints
"ready <client port> <reply>" (TCP: the server's greeting; UDP: the answer to "hello"). Then, for
each line read on stdin, sends it on the same socket and prints the reply line, or "ERROR <why>":
"timeout" (nothing came back within TIMEOUT), "closed" (the peer closed), or the exception's name
(ConnectionResetError: a reset; ConnectionRefusedError: an ICMP port unreachable).
TCP replies are acknowledged at once (TCP_QUICKACK, not a delayed ACK): once a reply is printed,
nothing of the connection is in flight until the next line.
"""

import socket
import sys


def main() -> None:
    proto, host, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    if proto == "tcp":
        sock = socket.create_connection((host, port), timeout=timeout)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect((host, port))
    sock.settimeout(timeout)
    pending = b""

    def reply() -> str:
        nonlocal pending
        try:
            if proto == "udp":
                return sock.recv(2048).decode().strip()
            while b"\n" not in pending:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # the kernel clears it now and then
                data = sock.recv(2048)
                if not data:
                    return "ERROR closed"
                pending += data
            line, pending = pending.split(b"\n", 1)
            return line.decode().strip()
        except TimeoutError:
            return "ERROR timeout"
        except OSError as exc:
            return f"ERROR {type(exc).__name__}"

    if proto == "udp":
        sock.send(b"hello")
    print("ready", sock.getsockname()[1], reply(), flush=True)
    for line in sys.stdin:
        try:
            sock.send(line.strip().encode() + (b"\n" if proto == "tcp" else b""))
        except OSError as exc:
            print(f"ERROR {type(exc).__name__}", flush=True)
            continue
        print(reply(), flush=True)


if __name__ == "__main__":
    main()
