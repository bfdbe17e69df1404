"""Results -> the markdown table, the targets (pass or miss), and results.json."""

import statistics
from collections.abc import Callable
from typing import Any

from stats import summary

Row = dict[str, Any]

NOOP_OPS = ("prepare", "release", "migrate", "started", "stopped")
VIRSH_PHASES = {
    "without": "no hook (before install.sh)",
    "with": "hook installed (install.sh)",
    "without_again": "no hook (after install.sh --uninstall)",
}
SECTION_TITLES = {
    "1": "nothing to do",
    "2": "start / stop path",
    "3": "the guide's way",
    "4": "beside other VMs",
    "5": "sync",
    "6": "data path",
    "7": "virsh (lab)",
    "8": "both modes: in-process / service running",
    "9": "the firewall tool on the stop path",
}
BACKENDS = ("iptables", "nftables")
MODES = {"inprocess": "in-process", "service": "service running"}
# section 8's measures: (key, what, unit, row id after modes.<backend>.<mode>.; None: the no-op ratio)
MODE_MEASURES = (
    ("noop", "nothing to do (slowest of the five operations), x `python -I -S -c pass`", "x", None),
    ("start.warm", "start path, 10 forwards, restart (render cache warm)", "ms", "path.10.start_path"),
    ("start.cold", "start path, 10 forwards, first start (render cache cold)", "ms", "path.10.cold.start_path"),
    ("stop", "stop path, 10 forwards", "ms", "path.10.stop_path"),
)
# the limits: with the service, issue 14's targets; in-process, no slower than run 14 (iptables host)
MODE_LIMITS = {
    "service": {"noop": 1.2, "start.warm": 60.0, "start.cold": 60.0, "stop": 40.0},
    "inprocess": {"noop": 1.62, "start.warm": 90.7, "start.cold": 101.8, "stop": 64.0},
}
MODE_LIMIT_SOURCES = {"service": "issue 14", "inprocess": "run 14"}
FWTOOL_PARTS = {
    "remove": "removal, committed",
    "socket": "the same removal, one netlink socket kept open (libnftables)",
    "check": "check mode, no commit",
    "listing": "a listing of ours",
    "version": "process alone",
}


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "conn/s":
        return f"{value:,.0f}"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}"


def table(rows: list[Row], detail: bool = False) -> str:
    lines = [
        "| # | measurement | unit | median | min-max | IQR | n | CPU |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: r["section"]):  # stable: run order within a section
        if bool(r.get("detail")) != detail:
            continue
        unit = r["unit"]
        extra = f" (jump {r['dispatch_position']} in PORTFWD)" if "dispatch_position" in r else ""
        extra += f" ({r['map_elements']:,} elements in map dnat_tcp)" if "map_elements" in r else ""
        extra += f" ({r['note']})" if "note" in r else ""
        if r.get("id", "").endswith(".bare") and "load" in r:
            extra += f" ({r['load']:.2f}x section 1's, attempt(s): {r['attempts']})"
        lines.append(
            f"| {r['section']} | {r['label']}{extra} | {unit} | {fmt(r['median'], unit)} "
            f"| {fmt(r['min'], unit)}-{fmt(r['max'], unit)} | {fmt(r['q1'], unit)}-{fmt(r['q3'], unit)} | {r['n']} "
            f"| {fmt(r.get('cpu'), unit)} |"
        )
    return "\n".join(lines)


def virsh_rows(virsh: dict[str, Any]) -> list[Row]:
    """Section 7's rows from bench/virsh.py's results (a note row when it was skipped or failed)."""
    rows: list[Row] = []
    for key, what in VIRSH_PHASES.items():
        for op in ("start", "destroy"):
            stats = virsh.get("phases", {}).get(key, {}).get(op)
            if stats:
                rows.append({"section": "7", "id": f"virsh.{op}.{key}", "label": f"`virsh {op}`, {what}",
                             "unit": "ms", **stats})  # fmt: skip
    problem = virsh.get("skipped") or virsh.get("error")
    if problem:
        empty = summary([])  # no samples: n 0, every figure None
        rows.append({"section": "7", "id": "virsh.note", "label": "`virsh start` / `virsh destroy`", "unit": "ms",
                     **empty, "note": f"{'skipped' if 'skipped' in virsh else 'error'}: {problem}"})  # fmt: skip
    return rows


def virsh_added(rows: list[Row]) -> float | None:
    """What the hook adds to ``virsh start``: its median minus the median of both no-hook phases."""
    by_id = {r["id"]: r for r in rows}
    with_hook = by_id.get("virsh.start.with")
    phases = [by_id.get(f"virsh.start.{key}", {}) for key in ("without", "without_again")]
    without = [v for phase in phases for v in phase.get("samples", [])]
    if not with_hook or not with_hook["n"] or not without:
        return None
    return float(with_hook["median"]) - float(statistics.median(without))


def at_most(limit: float) -> Callable[[float], bool]:
    return lambda value: value <= limit


def targets(rows: list[Row]) -> list[dict[str, Any]]:
    by_id = {r["id"]: r for r in rows}

    def median(key: str) -> float | None:
        r = by_id.get(key)
        return None if r is None else r["median"]

    out: list[dict[str, Any]] = []

    def check(
        name: str,
        value: float | None,
        limit: float,
        unit: str,
        ok: Callable[[float], bool],
        note: str = "",
        **extra: str,
    ) -> None:
        out.append(
            {"target": name, "value": value, "limit": limit, "unit": unit, "ok": None if value is None else ok(value)}
            | extra
        )
        if note and value is None:
            out[-1]["note"] = note

    def ratio(top: str, bottom: str) -> float | None:
        a, b = median(top), median(bottom)
        return None if a is None or not b else a / b

    for op, what in zip(NOOP_OPS, (
        "prepare, VM without forwards",
        "release, unknown VM",
        "migrate",
        "started, VM without forwards",
        "stopped, VM without forwards",
    ), strict=True):  # fmt: skip
        value = ratio(f"noop.{op}", "bare")
        check(f"nothing to do ({what}) <= 1.5x bare start (python -c pass)", value, 1.5, "x", lambda v: v <= 1.5)
    slowest = max((f"noop.{op}" for op in NOOP_OPS), key=lambda key: median(key) or 0.0)
    for bare, how in (("bare", "python -c pass"), ("bare.nosite", "python -I -S -c pass")):
        check(f"later target: nothing to do (slowest: {slowest.split('.')[1]}) <= 1.2x bare start ({how})",
              ratio(slowest, bare), 1.2, "x", lambda v: v <= 1.2)  # fmt: skip
    check("start path, 10 forwards <= 100 ms", median("path.10.start_path"), 100, "ms", lambda v: v <= 100)
    check("start path, 100 forwards <= 130 ms", median("path.100.start_path"), 130, "ms", lambda v: v <= 130)
    check("start path, 10 forwards <= 100 ms (first start: render cache cold)", median("path.10.cold.start_path"),
          100, "ms", lambda v: v <= 100)  # fmt: skip
    check("start path, 100 forwards <= 130 ms (first start: render cache cold)", median("path.100.cold.start_path"),
          130, "ms", lambda v: v <= 130)  # fmt: skip
    for n in (1, 10, 100):
        check(f"forwards live within 150 ms ({n} fwd)", median(f"path.{n}.live"), 150, "ms", lambda v: v <= 150)
    for n in (1, 10, 100):
        check(f"stop path <= 60 ms ({n} fwd)", median(f"path.{n}.stop_path"), 60, "ms", lambda v: v <= 60)
    for path in ("start_path", "stop_path"):
        value = ratio(f"path.100.{path}", f"path.1.{path}")
        check(f"100 forwards <= 1.3x 1 forward ({path.replace('_', ' ')})", value, 1.3, "x", lambda v: v <= 1.3)
    for op, what in (("started", "apply"), ("stopped", "remove")):
        value = ratio(f"scale.1000.{op}", f"scale.0.{op}")
        check(f"{what} beside 1,000 VMs <= 1.5x beside none", value, 1.5, "x", lambda v: v <= 1.5)
    for kind in ("cold", "warm"):
        value = median(f"sync.1000.{kind}")
        check(f"sync 1,000 x 10 < 3 s ({kind})", value, 3000, "ms", lambda v: v < 3000)
    value = ratio("datapath.nftables.10000", "datapath.nftables.1")
    check("nftables: 10,000 forwards >= 90% of the rate with 1", value, 0.9, "x", lambda v: v >= 0.9)
    for backend in BACKENDS:
        for mode, what in MODES.items():
            prefix = f"modes.{backend}.{mode}."
            if f"{prefix}bare.nosite" not in by_id:
                continue
            for key, measure, unit, rid in MODE_MEASURES:
                limit = MODE_LIMITS[mode][key]
                if rid is None:
                    slowest = max((f"{prefix}noop.{op}" for op in NOOP_OPS), key=lambda k: median(k) or 0.0)
                    value = ratio(slowest, f"{prefix}bare.nosite")
                    measure = f"{measure} (slowest: {slowest.rsplit('.', 1)[1]})"
                else:
                    value = median(prefix + rid)
                name = f"{backend}, {what}: {measure} <= {limit:g}{' ms' if unit == 'ms' else 'x'}"
                name += f" ({MODE_LIMIT_SOURCES[mode]})"
                check(name, value, limit, unit, at_most(limit), group="modes", backend=backend, mode=mode, measure=key)
    virsh_note = next((r["note"] for r in rows if r["id"] == "virsh.note"), "not measured")
    check("hook adds < 150 ms to virsh start", virsh_added(rows), 150, "ms", lambda v: v < 150, virsh_note)
    return out


def target_lines(items: list[dict[str, Any]]) -> str:
    lines = []
    for t in items:
        if t["ok"] is None:
            lines.append(f"- n/a  {t['target']}: {t.get('note', 'not measured')}")
            continue
        value = f"{t['value']:.2f}x" if t["unit"] == "x" else f"{t['value']:.1f} ms"
        lines.append(f"- {'PASS' if t['ok'] else 'MISS'} {t['target']}: {value}")
    return "\n".join(lines)


def info_lines(rows: list[Row]) -> str:
    """Figures without a target that put the others in context."""
    by_id = {r["id"]: r["median"] for r in rows}
    lines = []
    hook, direct, dash = by_id.get("noop.prepare"), by_id.get("noop.prepare.boot"), by_id.get("spawn.sh")
    bare, nosite = by_id.get("bare"), by_id.get("bare.nosite")
    if hook and direct and dash and bare and nosite:
        lines.append(
            f"- nothing to do through the shim (prepare): {hook:.1f} ms = {hook / bare:.2f}x `python -c pass` "
            f"({bare:.1f}), {hook / nosite:.2f}x `python -I -S -c pass` ({nosite:.1f}); the boot.py command line "
            f"alone {direct:.1f} ms ({direct / nosite:.2f}x): the shim adds {hook - direct:.1f} ms "
            f"(`/bin/sh -c :` {dash:.1f} ms)"
        )
    for backend in ("iptables", "nftables"):
        one, many = by_id.get(f"datapath.{backend}.1"), by_id.get(f"datapath.{backend}.10000")
        if one and many:
            lines.append(f"- {backend} data path: 10,000 other forwards give {many / one:.2f}x the rate of 1")
    for op in ("start", "destroy"):
        phases = [by_id.get(f"virsh.{op}.{key}") for key in VIRSH_PHASES]
        if all(phases):
            figures = " / ".join(f"{v:.0f}" for v in phases if v)
            lines.append(f"- virsh {op}: {figures} ms (no hook / hook / no hook again)")
    for n in (1, 10, 100):
        hook, guide_add = by_id.get(f"path.{n}.started"), by_id.get(f"guide.{n}.add")
        stop, guide_rm = by_id.get(f"path.{n}.stopped"), by_id.get(f"guide.{n}.remove")
        if hook and guide_add and stop and guide_rm:
            lines.append(
                f"- {n} forward(s): hook started {hook:.1f} ms vs the guide's add {guide_add:.1f} ms; "
                f"hook stopped {stop:.1f} ms vs the guide's remove {guide_rm:.1f} ms"
            )
    return "\n".join(lines)


def modes_table(items: list[dict[str, Any]]) -> str:
    """Section 8's targets side by side: per backend and measure, in-process and service running."""
    found = {(t["backend"], t["measure"], t["mode"]): t for t in items if t.get("group") == "modes"}
    if not found:
        return ""

    def cells(t: dict[str, Any] | None) -> str:
        if t is None:
            return "- | - | -"
        unit = "x" if t["unit"] == "x" else " ms"
        value = "-" if t["value"] is None else f"{t['value']:.2f}x" if t["unit"] == "x" else f"{t['value']:.1f} ms"
        verdict = "n/a" if t["ok"] is None else "**PASS**" if t["ok"] else "**MISS**"
        return f"{value} | <= {t['limit']:g}{unit} | {verdict}"

    lines = [
        "| backend | measurement | in-process | target (run 14) | | service running | target (issue 14) | |",
        "|---|---|---:|---:|---|---:|---:|---|",
    ]
    for backend in BACKENDS:
        for key, measure, _, _ in MODE_MEASURES:
            pair = [found.get((backend, key, mode)) for mode in MODES]
            if any(pair):
                lines.append(f"| {backend} | {measure} | {cells(pair[0])} | {cells(pair[1])} |")
    return "\n".join(lines)


def fwtool_table(rows: list[Row]) -> str:
    """Section 9: the firewall tool's process on the stop path, wall, CPU and waiting (wall - CPU)."""
    by_id = {r["id"]: r for r in rows}
    lines = ["| backend | process | wall | CPU | waited (wall - CPU) | n |", "|---|---|---:|---:|---:|---:|"]
    for backend in BACKENDS:
        for part, what in FWTOOL_PARTS.items():
            r = by_id.get(f"fwtool.{backend}.{part}")
            if r and r["n"]:
                how = f"{what}: `{r['argv']}`" if r.get("argv") else what
                lines.append(
                    f"| {backend} | {how} | {fmt(r['median'], 'ms')} ms | {fmt(r.get('cpu'), 'ms')} ms "
                    f"| {fmt(r['waited_ms']['median'], 'ms')} ms | {r['n']} |"
                )
    return "\n".join(lines) if len(lines) > 2 else ""


def modes_lines(rows: list[Row]) -> str:
    """The service's own figures and what the stop path's firewall transaction takes of it."""
    by_id = {r["id"]: r for r in rows}
    lines = []
    for backend in BACKENDS:
        service = by_id.get(f"modes.{backend}.service.cpu_per_cycle")
        if service and service.get("services"):
            ready = ", ".join(f"{s['ready_ms']:.0f} / {s.get('idle_ms', 0):.0f}" for s in service["services"])
            lines.append(
                f"- {backend}: the service (`{service['command']}`) ready / idle after {ready} ms; its own CPU "
                f"{fmt(service['median'], 'ms')} ms per start + stop cycle while the hooks ran"
            )
        tool = by_id.get(f"fwtool.{backend}.remove")
        for mode, what in MODES.items():
            stop = by_id.get(f"modes.{backend}.{mode}.path.10.stop_path")
            stopped = by_id.get(f"modes.{backend}.{mode}.path.10.stopped")
            if tool and tool["n"] and stop and stop["n"] and stopped:
                lines.append(
                    f"- {backend}, {what}: stop path {stop['median']:.1f} ms (CPU {fmt(stop.get('cpu'), 'ms')}), "
                    f"`stopped` {stopped['median']:.1f} ms (CPU {fmt(stopped.get('cpu'), 'ms')}); the removal's "
                    f"firewall process alone {tool['median']:.1f} ms wall, {fmt(tool.get('cpu'), 'ms')} ms CPU"
                )
    return "\n".join(lines)


def profile_lines(profiles: dict[str, Any]) -> str:
    """The import side of the profiles: what each import adds, and -X importtime totals."""
    lines = []
    costs = profiles.get("import_costs_ms")
    if costs:
        lines.append(f"Import costs, added to `python -I -S` with boot.py's sys.path ({costs['bare_ms']} ms):")
        lines += [f"- {name}: +{added} ms" for name, added in costs["added_ms"].items()]
    for key, value in profiles.items():
        if key.startswith("importtime."):
            top = ", ".join(f"{name} {ms:.1f}" for name, ms in value["top_packages_ms"][:6])
            lines.append(
                f"- `-X importtime` {key.split('.', 1)[1]}: {value['modules']} modules, {value['total_ms']:.1f} ms "
                f"of imports (self time by package: {top})"
            )
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    rows = results["rows"]
    parts = [
        "## Results",
        "",
        "Wall-clock figures; CPU: median user + system time of the hook process(es) and the iptables",
        "processes they waited for (less sensitive to other load on the machine; not to waits in the kernel).",
        "",
        table(rows),
        "",
        "### Targets",
        "",
        target_lines(results["targets"]),
        "",
        info_lines(rows),
        "",
        "### Both modes: in-process and with the service running (section 8)",
        "",
        modes_table(results["targets"]),
        "",
        modes_lines(rows),
        "",
        "### The firewall tool's process on the stop path (section 9)",
        "",
        fwtool_table(rows),
        "",
        "### Each hook invocation",
        "",
        table(rows, detail=True),
        "",
        "### Imports",
        "",
        profile_lines(results.get("profiles", {})),
    ]
    return "\n".join(parts) + "\n"
