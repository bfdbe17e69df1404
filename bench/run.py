#!/usr/bin/python3
"""libvirt-portfwd benchmark (issue 5): hook costs, forward liveness, scale, sync, data path.

Run as root from anywhere: ``/usr/bin/python3 bench/run.py [--quick] [--ref REV]`` (this file
needs only the standard library). See bench/README.md.

It snapshots the project (the work tree, or REV), builds a libvirt-like host from network
namespaces with libvirt's own iptables rules, installs the runtime there with the snapshot's own
``install.sh --stage`` (the release directory compiled by /usr/bin/python3, the hooks as POSIX sh
shims, the CLI launcher: what install.sh installs, under a temporary prefix and root), and runs
bench/measure.py inside the host namespace (row 8 runs the hooks in-process and with the
resident service running, side by side); then on a second host whose libvirt runs nftables
(rows 8, 9 and 6), and bench/virsh.py in the real lab of tests/lab (row 7, unless --no-virsh).
It prints a markdown table and the targets, writes bench/results.json, and removes every
namespace and temporary directory it made, whatever happens.
"""

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import report
from lab import PYTHON, REPO, SNAPSHOT_PATHS, SYSTEM_ENV, BenchError, Lab, log

BENCH = Path(__file__).resolve().parent
MEASURE_TIMEOUT = 900.0
VIRSH_TIMEOUT = 900.0
BULK_DOMAINS = 1000
LIBVIRT_VERSION = "import libvirt; v = libvirt.getVersion(); print(v // 10**6, v // 1000 % 1000, v % 1000, sep='.')"
# what the installed runtime runs on: the shim's /bin/sh, the interpreter, the dependencies boot.py adds
RUNTIME_PACKAGES = ("dash", "python3", "python3-lxml", "python3-jinja2", "python3-yaml", "python3-libvirt")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run (about 2 minutes)")
    parser.add_argument("--ref", help="benchmark this git revision instead of the work tree (git archive)")
    parser.add_argument("--output", type=Path, default=BENCH / "results.json", help="default: bench/results.json")
    parser.add_argument("--no-virsh", action="store_true", help="skip row 7 (the real libvirtd lab, tests/lab)")
    return parser.parse_args(argv)


def preflight() -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root (network namespaces and iptables)")
    for tool in ("ip", "iptables", "iptables-restore", "iptables-save", "nft", "tar"):
        if shutil.which(tool, path=SYSTEM_ENV["PATH"]) is None:
            raise BenchError(f"{tool} is not installed (tests/run installs what is needed)")
    if not Path(PYTHON).exists():
        raise BenchError(f"{PYTHON} is missing")
    missing = [pkg for pkg in RUNTIME_PACKAGES[1:] if package_version(pkg) == "?"]
    if missing:  # install.sh would apt-get them: the benchmark does not install packages
        raise BenchError(f"missing Debian packages (install.sh or tests/run installs them): {' '.join(missing)}")


def output_of(*argv: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "?"
    return (proc.stdout or proc.stderr).strip()


def package_version(package: str) -> str:
    """The installed version of a Debian package, "?" when it is not installed."""
    status = output_of("dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", package).split()
    return status[1] if len(status) == 2 and status[0] == "installed" else "?"


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (/proc/stat; steal and softirq included)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU seconds of everything this run waited for (measure.py, the hooks, iptables, ...)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def work_tree_changes() -> list[str]:
    """``git status --porcelain`` of the benchmarked paths (--no-optional-locks: never writes the index)."""
    status = output_of("git", "-C", str(REPO), "--no-optional-locks", "status", "--porcelain", "--", *SNAPSHOT_PATHS)
    return status.splitlines()


def machine(python: str, source: str) -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")  # fmt: skip
    os_release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(int(meminfo[1]) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": os_release.get("PRETTY_NAME", "?").strip('"'),
        "debian_version": Path("/etc/debian_version").read_text().strip(),
        "python": output_of(python, "--version"),
        "python_path": f"{python} -I -S <release>/hooks/boot.py, started by the /bin/sh shim (install.sh --stage)",
        "runtime_packages": {pkg: package_version(pkg) for pkg in RUNTIME_PACKAGES},
        "iptables": output_of("iptables", "--version"),
        "libvirt": output_of(python, "-c", LIBVIRT_VERSION),
        "source": source,
        "git_head_at_end": output_of("git", "-C", str(REPO), "rev-parse", "HEAD"),
        "work_tree_changes": work_tree_changes() if source.startswith("work tree") else [],
    }  # fmt: skip


def measure(lab: Lab, source: str, quick: bool) -> dict[str, Any]:
    """Run measure.py inside the host namespace; its progress goes to our stderr."""
    info, out = lab.workdir / f"info-{lab.kind}.json", lab.workdir / f"out-{lab.kind}.json"
    lab.write_info(info, source)
    argv = ["ip", "netns", "exec", lab.host, lab.python, str(BENCH / "measure.py"), str(info), str(out)]
    proc = subprocess.run(argv + (["--quick"] if quick else []), env=SYSTEM_ENV, timeout=MEASURE_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise BenchError(f"measure.py failed (exit {proc.returncode}); see above")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def nftables_lab(workdir: Path, first: Lab) -> Lab:
    """A second host for row 6's nftables figures: libvirt's nftables table, the same snapshot
    (staged again by its install.sh, into this host's own prefix and root)."""
    lab = Lab(workdir / "nft", kind="nftables")
    lab.source = first.source
    lab.workdir.mkdir()
    return lab


def virsh_row(snapshot: Path, workdir: Path, quick: bool) -> dict[str, Any]:
    """Row 7 in the real lab (bench/virsh.py, Debian's python3: tests/lab needs only the stdlib)."""
    out = workdir / "virsh.json"
    argv = ["/usr/bin/python3", str(BENCH / "virsh.py"), str(snapshot), str(out)] + (["--quick"] if quick else [])
    proc = subprocess.run(argv, timeout=VIRSH_TIMEOUT, check=False)
    if not out.exists():
        return {"error": f"bench/virsh.py: exit {proc.returncode}, no results"}
    result: dict[str, Any] = json.loads(out.read_text())
    if proc.returncode != 0:
        result.setdefault("error", f"bench/virsh.py: exit {proc.returncode}")
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    begin = time.monotonic()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    busy_before, own_before = busy_seconds(), own_seconds()
    workdir = Path(tempfile.mkdtemp(prefix="pfbench-"))
    lab = Lab(workdir)
    labs = [lab]
    virsh: dict[str, Any] = {"skipped": "--no-virsh"}
    try:
        source = lab.snapshot(args.ref)
        if args.ref is None:
            head = output_of("git", "-C", str(REPO), "rev-parse", "HEAD")
            source = f"work tree (HEAD {head[:12]} + {len(work_tree_changes())} changed paths)"

        def measure_host(host: Lab, what: str) -> dict[str, Any]:
            log(f"{what}: namespaces {host.host}, {host.guest}, {host.client}; root {host.root}")
            log(f"   {source}: install.sh --stage (release in {host.prefix}, hooks and CLI under the root)")
            host.create()
            host.write_root(bulk=BULK_DOMAINS)
            host.start_guest_server()
            result = measure(host, source, args.quick)
            host.destroy()
            return result

        measured = measure_host(lab, "iptables host")
        nft = nftables_lab(workdir, lab)
        labs.append(nft)
        nft_measured = measure_host(nft, "nftables host")
        measured["rows"] += nft_measured["rows"]
        measured["step_seconds"].update(nft_measured["step_seconds"])
        if not args.no_virsh:
            log("7. virsh start / destroy in the real lab (tests/lab), with and without the hook")
            begin_virsh = time.monotonic()
            virsh = virsh_row(lab.source, workdir, args.quick)
            measured["step_seconds"]["virsh"] = round(time.monotonic() - begin_virsh, 1)
        measured["rows"] += report.virsh_rows(virsh)
        measured["virsh"] = virsh
        meta = machine(lab.python, source)
    finally:
        for each in labs:
            each.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    meta["command"] = shlex.join([sys.executable, *sys.argv])
    meta["quick"] = args.quick
    meta["wall_seconds"] = round(time.monotonic() - begin, 1)
    meta["loadavg_before_after"] = [load_before, Path("/proc/loadavg").read_text().split()[:3]]
    others = busy_seconds() - busy_before - (own_seconds() - own_before)
    meta["others_cpu_seconds"] = round(others, 1)  # the kernel's work for our packets included; can be < 0
    meta["others_share_of_machine"] = round(others / (meta["wall_seconds"] * (os.cpu_count() or 1)), 3)
    return {"meta": meta, **measured, "targets": report.targets(measured["rows"])}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        preflight()
        results = run(args)
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    meta = results["meta"]
    print(f"# libvirt-portfwd benchmark ({meta['source']}, {meta['wall_seconds']} s)\n")
    print(
        f"Other load on the machine during the run: {meta['others_cpu_seconds']} CPU seconds "
        f"({100 * meta['others_share_of_machine']:.0f}% of its {os.cpu_count()} cores; includes the kernel's "
        "softirq work for the data path's packets).\n"
    )
    print(report.markdown(results))
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
