"""Directories watched with inotify (libc through ctypes): the service wakes the moment a lease or
network file is written, renamed into place or removed, instead of at its next look.

Only a wake-up: what changed is read from the files themselves (service.py's follow-ups compare
the files' identities, as they did when they looked every second, which they still do: a
directory that did not exist when the service started, or an inotify that is not there, only
costs that second).
"""

import ctypes
import os

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x2, 0x8, 0x80, 0x100, 0x200
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE


class DirWatch:
    """An inotify descriptor watching ``directories`` (those that exist); ``fileno`` for select."""

    def __init__(self, directories: tuple[str, ...]) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd: int = int(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.watched = [d for d in directories if libc.inotify_add_watch(self.fd, d.encode(), MASK) >= 0]

    def fileno(self) -> int:
        return self.fd

    def drain(self) -> None:
        """Read every pending event (their content does not matter: the files are read again)."""
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


def watch(directories: tuple[str, ...]) -> DirWatch | None:
    """A watch of those of ``directories`` that exist, or None (no inotify, or none exists)."""
    try:
        found = DirWatch(directories)
    except (OSError, AttributeError):
        return None
    if not found.watched:
        found.close()
        return None
    return found
