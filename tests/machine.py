"""The machine as the test suite found it: a snapshot, and what differs from it at the end.

tests/conftest.py takes a snapshot at session start (after tests/run's own installs);
tests/test_machine.py, run last in every session, takes another and fails with the difference,
and with what this run left running (``leftovers``). What a snapshot holds, and what it leaves
out and why (nothing else is left out):

* ``dpkg``: every package's version and status (``dpkg-query -W``).
* ``files /etc``, ``/opt``, ``/usr/local``: every path below them (not following symlinks) with
  its type, mode and owner; a symlink's target; a file's size and mtime (nanoseconds). Not a
  hash of the contents: /opt can hold gigabytes (8 GB where this was written), and every write
  changes the mtime. A directory's mtime and size are left out: a test that creates a
  file and removes it again changes both (ext4 never shrinks a directory), though it leaves
  nothing behind; the entries themselves are compared. No file is left out: none changed on
  its own while this was written (/etc/mtab is a symlink; resolv.conf, hosts and hostname are
  written at boot only). A package install does change them (ld.so.cache, rc?.d links), and
  shows as what it is, beside the dpkg section.
* ``links``, ``addresses``, ``routes``, ``rules``: the network namespace pytest runs in (the
  machine's own: tests/run runs there), from ``ip -j``; without statistics (``-s`` not given),
  an address's lifetimes only as forever or finite and a route without ``expires`` (both
  count down on their own).
* ``sysctl``: the forwarding and bridge-netfilter switches of that namespace (install.sh and
  the namespace tests set them inside their own namespaces only).
* ``iptables-save``, ``ip6tables-save``, ``nft list ruleset``: in full, with the packet and
  byte counters zeroed, the tools' ``# Generated``/``# Completed`` timestamp lines dropped and
  nft's ``expires`` countdowns removed.
* ``mounts``: ``/proc/self/mountinfo`` of the mount namespace pytest runs in (the machine's):
  mount point, root, type, source, options, device, propagation, sorted; the mount and parent
  ids and the peer group numbers are left out (ids). Left out too: ``/run/netns`` and the
  mounts below it. Each named network namespace is a mount there, made and removed by
  whichever run owns it, and the namespace check below judges them by name (this run's or
  another's); ``/run/netns`` itself is iproute2's bind mount, made by the first
  ``ip netns add`` on the machine (of any run) and never removed.

``leftovers``, at the end only: a named network namespace whose name carries this run's tag
(tests/names.py), and a process that is ours: its environment carries this run's tag
(``LIBVIRT_PORTFWD_TEST_RUN``), or it runs this checkout's interpreter or a script of it by
absolute path (the hook, its detached waiter: libvirt's environment has no tag) and did not run
at session start (the snapshot lists those), or it is a child of pytest never waited for.
Another run's namespaces and processes are neither. Session-scoped fixtures are still set up
when the last test runs: one that keeps a namespace or a process would be reported.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.names import RUN_ENV, is_ours

TREES = ("/etc", "/opt", "/usr/local")
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/bridge/bridge-nf-call-arptables",
)
NETNS_DIR = "/run/netns"
MAX_SHOWN = 40  # differences shown per section; the rest are counted
FOREVER = 4294967295  # ip's lifetime of an address that does not expire

Keyed = dict[str, str]  # key -> what it is; compared key by key
Lines = tuple[str, ...]  # an ordered listing (a ruleset); compared as a unified diff


@dataclass(frozen=True)
class Snapshot:
    sections: dict[str, Keyed | Lines]
    processes: frozenset[tuple[int, str]] = field(default_factory=frozenset)  # (pid, start time) of this checkout's


def take(repo: Path) -> Snapshot:
    """The machine now (as root)."""
    sections: dict[str, Keyed | Lines] = {"dpkg": packages()}
    for root in TREES:
        sections[f"files {root}"] = tree(root)
    sections.update(network())
    sections["sysctl"] = sysctls()
    for tool in ("iptables-save", "ip6tables-save"):
        sections[tool] = xtables(run([tool]))
    sections["nft list ruleset"] = nft(run(["nft", "list", "ruleset"]))
    sections["mounts"] = mounts(Path("/proc/self/mountinfo").read_text())
    return Snapshot(sections, frozenset((p.pid, p.start) for p in processes() if p.runs_from(repo)))


def run(argv: list[str]) -> str:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "LC_ALL": "C"}
    )
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


# --- what a snapshot holds ---------------------------------------------------------------------


def packages() -> Keyed:
    listing = run(["dpkg-query", "-W", "-f", "${binary:Package}\t${Version}\t${db:Status-Abbrev}\n"])
    rows = (line.split("\t") for line in listing.splitlines() if line)
    return {name: f"{version} ({status.strip()})" for name, version, status in rows}


def tree(root: str) -> Keyed:
    entries: Keyed = {}
    for directory, dirs, files in os.walk(root):  # symlinks to directories: listed, not followed
        for name in [".", *dirs, *files]:
            path = os.path.normpath(os.path.join(directory, name))
            with contextlib.suppress(FileNotFoundError):  # gone since it was listed: not there
                entries[path] = describe(path, os.lstat(path))
    return entries


def describe(path: str, st: os.stat_result) -> str:
    what = f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid}"
    if stat.S_ISDIR(st.st_mode):
        return what
    if stat.S_ISLNK(st.st_mode):
        return f"{what} -> {os.readlink(path)}"
    if stat.S_ISREG(st.st_mode):
        seconds, nanoseconds = divmod(st.st_mtime_ns, 1_000_000_000)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
        return f"{what} {st.st_size} bytes, modified {when}.{nanoseconds:09d}"
    return f"{what} device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def network() -> dict[str, Keyed | Lines]:
    links: Keyed = {}
    addresses: Keyed = {}
    for link in ip("link", "show"):
        links[link["ifname"]] = canonical(link)
    for link in ip("addr", "show"):
        for address in link.get("addr_info", []):
            for lifetime in ("valid_life_time", "preferred_life_time"):
                if lifetime in address:
                    address[lifetime] = "forever" if address[lifetime] == FOREVER else "finite"
            addresses[f"{link['ifname']} {address.get('local')}/{address.get('prefixlen')}"] = canonical(address)
    routes: Keyed = {}
    rules: Keyed = {}
    for family in ("-4", "-6"):
        for route in ip(family, "route", "show", "table", "all"):
            route.pop("expires", None)
            routes[f"{family} {canonical(route)}"] = ""
        for rule in ip(family, "rule", "show"):
            rules[f"{family} {canonical(rule)}"] = ""
    return {"links": links, "addresses": addresses, "routes": routes, "rules": rules}


def ip(*args: str) -> list[dict[str, Any]]:
    listing = run(["ip", "-j", *args]).strip()
    result: list[dict[str, Any]] = json.loads(listing) if listing else []
    return result


def canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def sysctls() -> Keyed:
    values: Keyed = {}
    for name in SYSCTLS:
        path = Path("/proc/sys") / name
        values[name.replace("/", ".")] = path.read_text().strip() if path.exists() else "(absent)"
    return values


def xtables(listing: str) -> Lines:
    lines = (re.sub(r"^(:\S+ \S+) \[\d+:\d+\]$", r"\1 [0:0]", line) for line in listing.splitlines())
    return tuple(line for line in lines if not line.startswith(("# Generated by", "# Completed on")))


def nft(listing: str) -> Lines:
    lines = []
    for line in listing.splitlines():
        line = re.sub(r"\bpackets \d+ bytes \d+", "packets 0 bytes 0", line)  # counters, named or not
        lines.append(re.sub(r" expires [0-9hmsd.]+", "", line))
    return tuple(lines)


def mounts(mountinfo: str) -> Keyed:
    seen: Keyed = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        dash = fields.index("-")
        device, root, point, options = fields[2:6]
        propagation = ",".join(tag.split(":")[0] for tag in fields[6:dash]) or "private"
        fstype, source, superoptions = fields[dash + 1 : dash + 4]
        if point == NETNS_DIR or point.startswith(NETNS_DIR + "/"):
            continue  # see the module docstring: the namespace check judges these by name
        key = f"{point} ({fstype} {source} {root})"
        while key in seen:  # mounted over: the same point twice
            key += " again"
        seen[key] = f"{options} {superoptions} device {device} {propagation}"
    return seen


# --- what differs ------------------------------------------------------------------------------


def compare(before: Snapshot, after: Snapshot) -> list[str]:
    """The differences, section by section, readable; empty when there are none."""
    report: list[str] = []
    for name, old in before.sections.items():
        new = after.sections.get(name, type(old)())
        if isinstance(old, tuple) and isinstance(new, tuple):
            lines = diff_lines(old, new)
            count = sum(1 for line in lines if line.startswith(("  +", "  -")))
            title = f"{name}: {count} line(s) added or removed (unified diff: - at session start, + now)"
        else:
            lines = diff_keyed(old, new)
            count = len(lines)
            title = f"{name}: {count} difference(s) (- at session start, + now, ~ changed)"
        if lines:
            more = [f"  ... and {len(lines) - MAX_SHOWN} more"] if len(lines) > MAX_SHOWN else []
            report += [title, *lines[:MAX_SHOWN], *more]
    return report


def diff_keyed(old: Keyed | Lines, new: Keyed | Lines) -> list[str]:
    assert isinstance(old, dict) and isinstance(new, dict)
    lines = []
    for key in sorted(old.keys() | new.keys()):
        if key not in new:
            lines.append(f"  - {key}" + (f": {old[key]}" if old[key] else ""))
        elif key not in old:
            lines.append(f"  + {key}" + (f": {new[key]}" if new[key] else ""))
        elif old[key] != new[key]:
            lines.append(f"  ~ {key}: {old[key]}\n      now: {new[key]}")
    return lines


def diff_lines(old: Lines, new: Lines) -> list[str]:
    diff = difflib.unified_diff(list(old), list(new), lineterm="", n=2)
    return [f"  {line}" for line in diff if not line.startswith(("---", "+++"))]


# --- what this run left behind -----------------------------------------------------------------


@dataclass(frozen=True)
class Process:
    pid: int
    start: str  # start time in clock ticks since boot (with the pid: one process, not a reused pid)
    ppid: int
    state: str
    argv: tuple[str, ...]
    environ: frozenset[str]

    def runs_from(self, repo: Path) -> bool:
        return bool(self.argv) and self.argv[0].startswith(f"{repo}/")

    def __str__(self) -> str:
        command = " ".join(self.argv) or "(no command line)"
        return f"pid {self.pid} ({self.state}, parent {self.ppid}): {command[:200]}"


def processes() -> Iterator[Process]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:  # gone meanwhile
                continue
            yield Process(
                pid=int(entry.name),
                start=fields[19],
                ppid=int(fields[1]),
                state=fields[0],
                argv=tuple(a.decode(errors="replace") for a in argv if a),
                environ=frozenset(e.decode(errors="replace") for e in environ if e),
            )


def ancestors(pid: int) -> set[int]:
    found = {pid}
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
        found.add(pid)
    return found


def leftovers(tag: str, before: Snapshot, repo: Path) -> list[str]:
    """What this run (``tag``) left: named network namespaces, processes; empty when nothing."""
    report: list[str] = []
    names = sorted(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else []
    report += [f"  network namespace {name} ({NETNS_DIR}/{name})" for name in names if is_ours(name, tag)]
    me = os.getpid()
    skip = ancestors(me)
    for proc in processes():
        if proc.pid in skip:
            continue
        why = []
        if f"{RUN_ENV}={tag}" in proc.environ:
            why.append(f"its environment has {RUN_ENV}={tag}")
        if proc.runs_from(repo) and (proc.pid, proc.start) not in before.processes:
            why.append(f"it runs {proc.argv[0]}")
        if proc.ppid == me:
            why.append("a child of pytest never waited for")
        if why:
            report.append(f"  process {proc}: {'; '.join(why)}")
    if report:
        report.insert(0, f"left behind by this run ({RUN_ENV}={tag}):")
    return report
