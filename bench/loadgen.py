"""New TCP connections, one after another, for a bounded time: ``loadgen.py HOST PORT SECONDS``.

Run inside the client namespace. Each connection is opened, reads the guest server's one-line
answer, and is reset on close (SO_LINGER 0: no TIME_WAIT, so client ports never run out).
Stops after SECONDS or MAX_CONNECTIONS, whichever comes first, or after MAX_ERRORS failures.
Prints one JSON line: connections, seconds, errors.
"""

import json
import socket
import struct
import sys
import time

MAX_CONNECTIONS = 50_000
MAX_ERRORS = 20
RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def main(argv: list[str]) -> int:
    host, port, seconds = argv[0], int(argv[1]), float(argv[2])
    connections = errors = 0
    begin = time.perf_counter()
    deadline = begin + seconds
    while connections < MAX_CONNECTIONS and errors < MAX_ERRORS:
        now = time.perf_counter()
        if now >= deadline:
            break
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
        sock.settimeout(2.0)
        try:
            sock.connect((host, port))
            if sock.recv(64):
                connections += 1
            else:
                errors += 1
        except OSError:
            errors += 1
        finally:
            sock.close()
    elapsed = time.perf_counter() - begin
    print(json.dumps({"connections": connections, "seconds": elapsed, "errors": errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
