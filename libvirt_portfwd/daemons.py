"""libvirt's daemons as /proc shows them: which run here, and since when. Read only.

A process's start time is ``starttime`` (field 22 of ``/proc/PID/stat``: clock ticks after boot)
over CLK_TCK, plus the boot time ``btime`` of ``/proc/stat``. The kernel gives ``btime`` in whole
seconds, cut down, and ``starttime`` in whole ticks, so a start time is a window
(``earliest``, ``latest``) about a second wide, never a point: ``doctor`` says "started before"
or "after" only outside it.
"""

import os
from dataclasses import dataclass

PROC = "/proc"
QEMU_DAEMONS = ("libvirtd", "virtqemud")  # what runs qemu hooks: the monolithic daemon, the split one


@dataclass(frozen=True)
class Daemon:
    pid: int
    comm: str
    starttime: int  # clock ticks after boot (/proc/PID/stat field 22)
    btime: int  # the boot time /proc/stat said (seconds since the epoch, cut down)
    clk_tck: int
    earliest: float  # the start, seconds since the epoch: no earlier than this
    latest: float  # and no later than this
    elsewhere: bool | None = False  # in another network namespace? None: cannot tell (non-root)


def parse_stat(text: str) -> tuple[str, int]:
    """``/proc/PID/stat`` -> (comm, starttime). comm is between the first ``(`` and the last
    ``)``: it may hold spaces and parentheses itself."""
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return comm, int(fields[19])  # field 22 overall; fields[0] here is field 3 (state)


def parse_btime(text: str) -> int:
    """``/proc/stat`` -> its ``btime`` line's value."""
    for line in text.splitlines():
        if line.startswith("btime "):
            return int(line.split()[1])
    raise ValueError("no btime line in /proc/stat")


def start_window(starttime: int, btime: int, clk_tck: int) -> tuple[float, float]:
    """When a process started, as (earliest, latest) seconds since the epoch: the true boot time
    lies in [btime, btime + 1) and the true start in [starttime, starttime + 1) ticks after it."""
    earliest = btime + starttime / clk_tck
    return earliest, earliest + 1.0 + 1.0 / clk_tck


def find_daemons(names: tuple[str, ...] = QEMU_DAEMONS, proc: str = PROC) -> list[Daemon]:
    """Every process named one of ``names`` in this network namespace (whose firewall and guests
    are the ones we look at), by pid. A process whose namespace cannot be read (another user's,
    as non-root) is counted in, marked ``elsewhere=None``: nothing says where it is."""
    clk_tck = os.sysconf("SC_CLK_TCK")
    with open(os.path.join(proc, "stat"), encoding="ascii", errors="replace") as handle:
        btime = parse_btime(handle.read())
    ours = _netns(os.path.join(proc, "self"))
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "stat"), encoding="utf-8", errors="replace") as handle:
                comm, starttime = parse_stat(handle.read())
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
        if comm not in names:
            continue
        theirs = _netns(os.path.join(proc, entry))
        if ours and theirs and theirs != ours:
            continue
        earliest, latest = start_window(starttime, btime, clk_tck)
        unknown = None if not (ours and theirs) else False
        found.append(Daemon(int(entry), comm, starttime, btime, clk_tck, earliest, latest, unknown))
    return sorted(found, key=lambda d: d.pid)


def _netns(process: str) -> str:
    try:
        return os.readlink(os.path.join(process, "ns", "net"))
    except OSError:
        return ""
