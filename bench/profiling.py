"""Where the time goes: ``-X importtime`` and cProfile of single hook runs and of a sync.

Each profiled run is the command line the shim (or the CLI launcher) runs, with the profiler's
flags added: ``/usr/bin/python3 -I -S -X importtime <lib>/hooks/boot.py qemu ...`` and
``/usr/bin/python3 -I -S -m cProfile -o OUT <lib>/hooks/boot.py ...`` (the shim's own dash
start is measured in section 1, not here). Imports are summed per top-level package (self
times, so the figures add up to the total); cProfile's wall-clock timer also counts the time
spent waiting for iptables processes. cProfile swallows the script's SystemExit (its exit code
is always 0), so each profiled run is checked by its effect instead: live after ``started``,
gone after ``stopped``.
"""

import os
import pstats
import re
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

import scenario
from lab import SYSTEM_ENV, BenchError, LabInfo


class Host(Protocol):
    """What profiling needs of measure.Host (a Protocol: measure imports this module)."""

    info: LabInfo
    hook_env: dict[str, str]

    def timed(
        self, argv: list[str], stdin: bytes = b"", env: dict[str, str] | None = None, timeout: float = 60
    ) -> float: ...

    def boot_argv(self, *args: str, flags: Sequence[str] = ()) -> list[str]: ...

    def records(self) -> int: ...

    def verify_live(self, uuid: str, forwards: int) -> None: ...

    def verify_gone(self, uuid: str) -> None: ...


IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")
IMPORTS = {
    "jinja2": "import jinja2",
    "lxml.etree": "import lxml.etree",
    "xml.etree.ElementTree (stdlib)": "import xml.etree.ElementTree",
    "yaml": "import yaml",
    "dataclasses": "import dataclasses",
    "json": "import json",
    "subprocess": "import subprocess",
    "ipaddress": "import ipaddress",
    "libvirt_portfwd.render (jinja2)": "import libvirt_portfwd.render",
    "libvirt_portfwd.domain (lxml)": "import libvirt_portfwd.domain",
    "libvirt_portfwd.actions (started's imports)": "import libvirt_portfwd.actions",
    "libvirt_portfwd.actions + render": "import libvirt_portfwd.actions, libvirt_portfwd.render",
    "libvirt_portfwd.teardown (stopped's imports)": "import libvirt_portfwd.teardown",
}
DEPENDENCIES = "/usr/lib/python3/dist-packages"  # hooks/boot.py adds Debian's python3-* packages
BOOTSTRAP = ("<frozen importlib", "~:0(<built-in method builtins.exec>)", "~:0(<built-in method builtins.__import__>)")


def importtime(stderr: str) -> dict[str, Any]:
    """Total import time and the packages that take most of it (ms, summed self times)."""
    per_package: dict[str, float] = defaultdict(float)
    total, modules = 0.0, 0
    for line in stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match is None:
            continue
        self_ms = int(match.group(1)) / 1000
        per_package[match.group(4).split(".")[0]] += self_ms
        total += self_ms
        modules += 1
    top = sorted(per_package.items(), key=lambda kv: -kv[1])[:15]
    return {"total_ms": round(total, 2), "modules": modules, "top_packages_ms": [[n, round(t, 2)] for n, t in top]}


def import_costs(host: "Host", rounds: int) -> dict[str, Any]:
    """What importing each module adds to ``python -I -S`` with boot.py's sys.path (the release
    first, Debian's dist-packages last), in ms: medians of fresh processes."""
    python = host.info.python
    paths = f"import sys; sys.path.insert(0, {os.path.realpath(host.info.lib)!r}); sys.path.append({DEPENDENCIES!r})"
    samples: dict[str, list[float]] = {"bare": [], **{name: [] for name in IMPORTS}}
    for _ in range(rounds):
        samples["bare"].append(host.timed([python, "-I", "-S", "-c", paths]))
        for name, code in IMPORTS.items():
            samples[name].append(host.timed([python, "-I", "-S", "-c", f"{paths}; {code}"]))
    bare = statistics.median(samples["bare"]) * 1000
    added = {name: round(statistics.median(s) * 1000 - bare, 1) for name, s in samples.items() if name != "bare"}
    return {"import_costs_ms": {"bare_ms": round(bare, 1), "added_ms": added}}


def cprofile_top(path: str, lib: str, limit: int = 30) -> dict[str, list[list[Any]]]:
    """[where, calls, own ms, cumulative ms] by cumulative and by own time (import machinery left
    out); file names relative to the release, Debian's dist-packages or the stdlib."""
    stats = pstats.Stats(path).stats  # type: ignore[attr-defined]
    release = os.path.realpath(lib) + "/"
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in stats.items():
        short = filename.removeprefix(release).split("dist-packages/")[-1].split("lib/python3.11/")[-1]
        where = f"{short}:{line}({function})"
        if not where.startswith(BOOTSTRAP):
            rows.append([where, calls, round(own * 1000, 2), round(cumulative * 1000, 2)])
    by_cumulative = sorted(rows, key=lambda r: -r[3])[:limit]
    by_own = sorted(rows, key=lambda r: -r[2])[: limit // 2]
    return {"by_cumulative": by_cumulative, "by_own": by_own}


def run_profiled(
    host: "Host", argv: list[str], stdin: str, env: dict[str, str], timeout: float = 120
) -> tuple[float, str]:
    begin = time.perf_counter()
    proc = subprocess.run(
        argv, input=stdin.encode(), capture_output=True, env=env, cwd="/", timeout=timeout, check=False
    )
    elapsed = time.perf_counter() - begin
    if proc.returncode != 0:
        raise BenchError(f"profiled {' '.join(argv[-5:])}: exit {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return elapsed, proc.stderr.decode()


def profile_hook(host: "Host", suffix: str, importtime_too: bool) -> dict[str, Any]:
    """started and stopped of a domain with 10 forwards (and a nothing-to-do prepare)."""
    name, uuid = "prof", scenario.measured_uuid(0x9F)
    forwards = scenario.measured_forwards(10)
    runs = [
        ("started_10", "started", "begin", scenario.domain_xml(name, uuid, forwards)),
        ("stopped_10", "stopped", "end", scenario.domain_xml(name, uuid, forwards, running=False)),
    ]
    plain = scenario.domain_xml("plain", scenario.measured_uuid(0xA0), [])
    out: dict[str, Any] = {}

    def boot(operation: str, sub: str, flags: list[str]) -> list[str]:
        return host.boot_argv("qemu", host.info.config, name, operation, sub, "-", flags=flags)

    if importtime_too:
        for label, operation, sub, xml in [*runs, ("noop_prepare", "prepare", "begin", plain)]:
            elapsed, stderr = run_profiled(host, boot(operation, sub, ["-X", "importtime"]), xml, host.hook_env)
            out[f"importtime.{label}{suffix}"] = {"wall_ms": round(elapsed * 1000, 2), **importtime(stderr)}
        host.verify_gone(uuid)
    for label, operation, sub, xml in runs:
        path = f"{host.info.workdir}/{label}{suffix}.prof"
        elapsed, _ = run_profiled(host, boot(operation, sub, ["-m", "cProfile", "-o", path]), xml, host.hook_env)
        if operation == "started":
            host.verify_live(uuid, len(forwards))
        out[f"cprofile.{label}{suffix}"] = {"wall_ms": round(elapsed * 1000, 2), **cprofile_top(path, host.info.lib)}
    host.verify_gone(uuid)
    return out


def profile_sync(host: "Host", uri: str, count: int) -> dict[str, Any]:
    """The CLI's sync of ``count`` domains under cProfile (leaves them installed)."""
    path = f"{host.info.workdir}/sync_{count}.prof"
    flags = ["-m", "cProfile", "-o", path]  # the CLI launcher's command line, profiled
    argv = host.boot_argv("cli", "--config", host.info.config, "--root", host.info.root, flags=flags)
    elapsed, _ = run_profiled(host, [*argv, "sync", "--connect", uri], "", {**SYSTEM_ENV, "PWD": "/"}, timeout=300)
    if host.records() != count:
        raise BenchError(f"profiled sync: {host.records()} records, expected {count}")
    return {f"cprofile.sync_{count}": {"wall_ms": round(elapsed * 1000, 2), **cprofile_top(path, host.info.lib)}}
