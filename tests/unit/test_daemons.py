"""libvirt's daemons in /proc: a process's start time from captured /proc text."""

import pytest

from libvirt_portfwd.daemons import parse_btime, parse_stat, start_window

# /proc/PID/stat of a libvirtd, and of a process whose comm holds spaces and parentheses
STAT = (
    "812 (libvirtd) S 1 812 812 0 -1 4194560 35231 1027 12 0 210 95 0 0 20 0 19 0 4321 1492185088 "
    "8913 18446744073709551615 1 1 0 0 0 0 0 4096 81923 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
)
ODD = "77 (a (b) c) R 1 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
PROC_STAT = "cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 100\nctxt 200\nbtime 1764590000\nprocesses 5000\n"


def test_start_time_from_proc_stat() -> None:
    assert parse_stat(STAT) == ("libvirtd", 4321)
    assert parse_stat(ODD) == ("a (b) c", 99)
    assert parse_btime(PROC_STAT) == 1764590000
    earliest, latest = start_window(4321, 1764590000, 100)
    assert earliest == pytest.approx(1764590043.21)
    # btime is cut to the second and starttime to the tick: the start is known to a window
    assert latest == pytest.approx(1764590043.21 + 1.01)
    with pytest.raises(ValueError):
        parse_btime("cpu 1 2 3\n")
