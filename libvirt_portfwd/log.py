"""Log lines go to syslog (the journal where there is one) and to stderr. Never to stdout."""

import sys
import syslog

from .errors import PROG


def info(message: str) -> None:
    _emit(syslog.LOG_INFO, message)


def error(message: str) -> None:
    _emit(syslog.LOG_ERR, message)


def _emit(priority: int, message: str) -> None:
    line = message if message.startswith(PROG) else f"{PROG}: {message}"
    syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_DAEMON)
    syslog.syslog(priority, line.removeprefix(f"{PROG}: "))
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed (a detached waiter): syslog still has it
        pass
