"""A stand-in host service for namespace tests (sshd, dnsmasq, a published container port): binds
one socket and holds it until killed.

Usage: host_listener.py tcp|udp ADDRESS PORT   -> prints "ready PID COMM" once bound (and
listening, for tcp); COMM is the process name as /proc shows it.
"""

import os
import signal
import socket
import sys


def main() -> None:
    proto, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    if proto == "tcp":
        sock.listen(8)
    with open("/proc/self/comm") as comm:
        print("ready", os.getpid(), comm.read().strip(), flush=True)
    signal.pause()


if __name__ == "__main__":
    main()
