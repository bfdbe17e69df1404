"""A stand-in guest service for namespace tests: answers on TCP and UDP ports with its own name.

Usage: guest_server.py NAME TCP_PORTS UDP_PORTS [hold]   (ports comma-separated)
Each TCP connection gets "NAME tcp PORT\n" and is closed; with "hold" it stays open until the
client closes it, and each line the client sends is answered "NAME tcp PORT <line>\n". Each UDP
datagram is answered "NAME udp PORT <payload>".
"""

import selectors
import socket
import sys


def main() -> None:
    name, tcp_ports, udp_ports = sys.argv[1], sys.argv[2], sys.argv[3]
    hold = sys.argv[4:] == ["hold"]
    selector = selectors.DefaultSelector()
    for port in filter(None, tcp_ports.split(",")):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", int(port)))
        sock.listen(64)
        selector.register(sock, selectors.EVENT_READ, ("tcp", int(port)))
    for port in filter(None, udp_ports.split(",")):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", int(port)))
        selector.register(sock, selectors.EVENT_READ, ("udp", int(port)))
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            proto, port = key.data
            sock = key.fileobj
            if proto == "tcp":
                conn, _ = sock.accept()
                conn.sendall(f"{name} tcp {port}\n".encode())
                if hold:
                    selector.register(conn, selectors.EVENT_READ, ("held", port))
                else:
                    conn.close()
            elif proto == "held":
                try:
                    data = sock.recv(2048)
                except OSError:
                    data = b""
                if not data:  # closed or reset: this connection is over
                    selector.unregister(sock)
                    sock.close()
                    continue
                try:
                    for line in data.decode(errors="replace").splitlines():
                        sock.sendall(f"{name} tcp {port} {line}\n".encode())
                except OSError:
                    selector.unregister(sock)
                    sock.close()
            else:
                data, peer = sock.recvfrom(2048)
                sock.sendto(f"{name} udp {port} ".encode() + data, peer)


if __name__ == "__main__":
    main()
