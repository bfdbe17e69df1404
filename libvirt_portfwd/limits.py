"""Every limit on what libvirt-portfwd reads and accepts, defined once (the README lists them).

A limit breached is one InputError naming the limit and the value, e.g.
``libvirt-portfwd: web1: over a limit (metadata): forwards per domain: 65, the limit is 64``.
Files are read through ``read_file``: regular files only (a directory, FIFO or device in place
of a file, or a link to one, is refused before it is opened), at most the limit's bytes.

Stdlib only and small: the hook reads its stdin through this module on every operation with work.
"""

import os
import stat

from .errors import InputError

KIB = 1024
MIB = 1024 * KIB


class Limit:
    """One limit: its name (as messages and the README say it), its value, its unit."""

    __slots__ = ("name", "unit", "value")

    def __init__(self, name: str, value: int, unit: str = "") -> None:
        self.name = name
        self.value = value
        self.unit = unit

    def check(self, count: int, where: str) -> None:
        """Raise the limit's error if ``count`` is over it."""
        if count > self.value:
            raise self.exceeded(count, where)

    def exceeded(self, count: int, where: str, *, at_least: bool = False) -> InputError:
        got = f"more than {self.value}" if at_least else str(count)
        unit = f" {self.unit}" if self.unit else ""
        human = f" ({self.value // MIB} MiB)" if self.unit == "bytes" and self.value % MIB == 0 else ""
        human = human or (f" ({self.value // KIB} KiB)" if self.unit == "bytes" and self.value % KIB == 0 else "")
        return InputError(
            "over a limit", f"{self.name}: {got}{unit}, the limit is {self.value}{unit}{human}", where=where
        )

    def __repr__(self) -> str:
        return f"Limit({self.name!r}, {self.value})"


# What is read: every input has a size limit.
DOMAIN_XML = Limit("domain XML size", 4 * MIB, "bytes")  # the hook's stdin, plan's file or stdin
NETWORK_XML = Limit("network status size", 1 * MIB, "bytes")  # /run/libvirt/network/<net>.xml
NETWORK_FILES = Limit("network status files", 1024)  # *.xml read from /run/libvirt/network
LEASE_FILE = Limit("lease file size", 2 * MIB, "bytes")  # /var/lib/libvirt/dnsmasq/<bridge>.status
CONFIG_FILE = Limit("config size", 128 * KIB, "bytes")  # the YAML config
YAML_NODES = Limit("config YAML nodes (aliases expanded)", 100_000)  # alias bombs, refused before expansion
YAML_DEPTH = Limit("config YAML nesting depth", 32)
XML_DEPTH = Limit("XML nesting depth", 256)  # libxml2's own limit without huge_tree (not ours to change)

# What one domain may declare (metadata and config together).
FORWARDS = Limit("forwards per domain", 64)
RANGES = Limit("port ranges per domain", 256)  # <range> elements / ranges entries, excluded ones included
EXCLUDED = Limit("excluded ranges per domain", 64)
SOURCES = Limit("source networks per forward", 32)
RULES = Limit("rules and map elements per domain", 65_536)  # what the forwards render (plan.count_rules)

# Values.
NAME_BYTES = Limit("domain and network name length", 255, "bytes")  # a file name in /etc/libvirt/qemu
PORT_DIGITS = 5  # a port is 1-65535, written in ASCII decimal without leading zero
YAML_INT_DIGITS = 18  # YAML integers longer than this are refused before int() (Python's own limit: 4300)

ALL = (
    DOMAIN_XML,
    NETWORK_XML,
    NETWORK_FILES,
    LEASE_FILE,
    CONFIG_FILE,
    YAML_NODES,
    YAML_DEPTH,
    FORWARDS,
    RANGES,
    EXCLUDED,
    SOURCES,
    RULES,
    NAME_BYTES,
)


def read_file(path: str, limit: Limit, what: str) -> bytes:
    """A regular file's bytes, at most ``limit``; FileNotFoundError is the caller's to decide.

    The file is checked before it is opened (a link to a device or FIFO is never opened: opening
    some devices has effects) and again once open (it may have been swapped meanwhile).
    """
    try:
        _regular(os.stat(path), path, what)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InputError(f"cannot read {what}", exc.strerror or str(exc), where=path) from None
    try:
        _regular(os.fstat(fd), path, what)
        chunks: list[bytes] = []
        size = 0
        while size <= limit.value:
            chunk = os.read(fd, min(limit.value + 1 - size, MIB))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise InputError(f"cannot read {what}", exc.strerror or str(exc), where=path) from None
    finally:
        os.close(fd)
    if size > limit.value:
        raise limit.exceeded(size, path, at_least=True)
    return b"".join(chunks)


def check_size(data: bytes, limit: Limit, where: str) -> None:
    """For bytes read elsewhere (stdin, libvirt's API): refuse more than ``limit``."""
    if len(data) > limit.value:
        raise limit.exceeded(len(data), where, at_least=True)


def _regular(st: os.stat_result, path: str, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"cannot read {what}", f"not a regular file (a {_kind(st.st_mode)})", where=path)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"
