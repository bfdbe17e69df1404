"""Where a hook run's time goes: ``python -X importtime`` and cProfile of single hook runs.

Imports are summed per top-level package (self times, so the figures add up to the total);
cProfile's wall-clock timer also counts the time spent waiting for iptables processes.
"""

import pstats
import re
import subprocess
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import scenario
from lab import BenchError

if TYPE_CHECKING:
    from measure import Host

IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")


def importtime(stderr: str) -> dict[str, Any]:
    """Total import time and the packages that take most of it (ms, summed self times)."""
    per_package: dict[str, float] = defaultdict(float)
    total = 0.0
    for line in stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match is None:
            continue
        self_us, name = int(match.group(1)), match.group(4)
        per_package[name.split(".")[0]] += self_us / 1000
        total += self_us / 1000
    top = sorted(per_package.items(), key=lambda kv: -kv[1])[:15]
    return {"total_ms": round(total, 2), "modules": sum(1 for _ in stderr.splitlines() if IMPORT_LINE.match(_)),
            "top_packages_ms": [[name, round(t, 2)] for name, t in top]}  # fmt: skip


def cprofile_top(path: str, limit: int = 30) -> list[list[Any]]:
    """The functions with the largest cumulative (wall-clock) time: [where, calls, own ms, cumulative ms]."""
    stats = pstats.Stats(path).stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in stats.items():
        short = filename.split("site-packages/")[-1].split("lib/python3.11/")[-1]
        rows.append([f"{short}:{line}({function})", calls, round(own * 1000, 2), round(cumulative * 1000, 2)])
    rows.sort(key=lambda r: -r[3])
    return rows[:limit]


def run_hook(host: "Host", flags: list[str], name: str, operation: str, sub: str, xml: str) -> tuple[float, str]:
    """The installed hook under its own interpreter with extra interpreter flags (-X, -m cProfile)."""
    argv = [host.info.python, *flags, "-I", host.info.hook, name, operation, sub, "-"]
    if flags and flags[0] == "-m":  # -m cProfile must come after -I
        argv = [host.info.python, "-I", *flags, host.info.hook, name, operation, sub, "-"]
    begin = time.perf_counter()
    proc = subprocess.run(argv, input=xml.encode(), capture_output=True, env=host.hook_env, cwd="/", check=False)
    elapsed = time.perf_counter() - begin
    if proc.returncode != 0:
        raise BenchError(f"profiled hook {operation}: exit {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return elapsed, proc.stderr.decode()


def profile_hook(host: "Host") -> dict[str, Any]:
    """Profiles of started and stopped (10 forwards) and of a nothing-to-do prepare."""
    name, uuid = "prof", scenario.measured_uuid(0x9F)
    forwards = scenario.measured_forwards(10)
    start_xml = scenario.domain_xml(name, uuid, forwards)
    stop_xml = scenario.domain_xml(name, uuid, forwards, running=False)
    plain = scenario.domain_xml("plain", scenario.measured_uuid(0xA0), [])
    out: dict[str, Any] = {}
    for label, operation, sub, xml in (
        ("started_10", "started", "begin", start_xml),
        ("stopped_10", "stopped", "end", stop_xml),
        ("noop_prepare", "prepare", "begin", plain),
    ):
        elapsed, stderr = run_hook(host, ["-X", "importtime"], name, operation, sub, xml)
        out[f"importtime.{label}"] = {"wall_ms": round(elapsed * 1000, 2), **importtime(stderr)}
    for label, operation, sub, xml in (
        ("started_10", "started", "begin", start_xml),
        ("stopped_10", "stopped", "end", stop_xml),
    ):
        path = f"{host.info.workdir}/{label}.prof"
        elapsed, _ = run_hook(host, ["-m", "cProfile", "-o", path], name, operation, sub, xml)
        out[f"cprofile.{label}"] = {"wall_ms": round(elapsed * 1000, 2), "top": cprofile_top(path)}
    host.verify_gone(uuid)
    return out
