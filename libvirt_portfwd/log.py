"""Log lines go to syslog (the journal where there is one) and to stderr. Never to stdout.

``info`` and ``error`` write one line to both; ``trace`` (a bug's traceback) goes to syslog
only, so that libvirt's error message and the admin's terminal get one line, not a traceback.
Syslog is spoken directly (a datagram to /dev/log, as glibc does) so that tests can listen on
``$LIBVIRT_PORTFWD_ROOT/dev/log``; where nobody listens, the line is on stderr only.
"""

import os
import sys

from .errors import PROG

DAEMON = 3 << 3  # syslog facility
ERR, INFO = 3, 6  # syslog priorities


def info(message: str) -> None:
    _emit(INFO, message)


def error(message: str) -> None:
    _emit(ERR, message)


def trace(text: str) -> None:
    """A traceback (several lines): to syslog only, one entry."""
    send_syslog(ERR, text.rstrip("\n"))


def _line(message: str) -> str:
    """The one-line form every entry point prints: ``libvirt-portfwd: ...``."""
    line = " ".join(message.splitlines())
    return line if line.startswith(f"{PROG}:") else f"{PROG}: {line}"


def _emit(priority: int, message: str) -> None:
    line = _line(message)
    send_syslog(priority, line.removeprefix(f"{PROG}: "))
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed (a detached waiter): syslog still has it
        pass


def send_syslog(priority: int, message: str) -> None:
    import _socket  # the builtin: the socket module costs more than a no-op hook run (enum, selectors)
    import time

    stamp = time.strftime("%b %e %H:%M:%S")
    data = f"<{DAEMON | priority}>{stamp} {PROG}[{os.getpid()}]: {message}".encode(errors="replace")
    path = os.path.join(os.environ.get("LIBVIRT_PORTFWD_ROOT", "/"), "dev/log")
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        try:
            sock.sendto(data[:65000], path)
        finally:
            sock.close()
    except OSError:  # no syslog here (a namespace, a box without one): stderr has the line
        pass
