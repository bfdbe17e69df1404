"""Run inside the client namespace: probe one TCP or UDP address and print what came back.

Usage: client_probe.py tcp|udp HOST PORT TIMEOUT   -> prints the reply, or "ERROR <reason>"
"""

import socket
import sys


def main() -> None:
    proto, host, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    try:
        if proto == "tcp":
            with socket.create_connection((host, port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                print(sock.recv(200).decode().strip())
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(timeout)
                sock.connect((host, port))
                sock.send(b"ping")
                print(sock.recv(200).decode().strip())
    except OSError as exc:
        print(f"ERROR {type(exc).__name__}")


if __name__ == "__main__":
    main()
