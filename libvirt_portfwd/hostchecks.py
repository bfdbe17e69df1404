"""``doctor``'s checks of the host, before any one domain: our hooks installed and seen by the
running libvirt daemon, the config, what this user may read, the kernel's forwarding sysctls.

Each check is a function of the Survey returning findings (doctor.py lists them in hop order);
read only. Where the sysctls matter:

- ``net.ipv4.ip_forward`` always: at 0 the kernel routes no packet from the uplink to a guest,
  so every forward fails (DNAT still happens; the translated packet is then dropped).
- ``rp_filter`` only where the route back to a client leaves by another interface than the one
  its packets came in by: a forward restricted to a ``dev`` that the default route does not use,
  or a host with several default routes. Strict mode (1; the larger of ``conf.all`` and
  ``conf.<dev>`` counts) drops such packets before they reach the guest (warn, or info for
  several uplinks, where it depends on the client). Anywhere else it cannot drop a forwarded
  packet and is not reported.
- br_netfilter (``net.bridge.bridge-nf-call-iptables``) only for frames bridged from guest to
  guest on one bridge, which then pass the ip firewall's forward hooks too. A forward's packets
  are never bridged that way: they are routed into the bridge, and hairpin connections (a guest
  to a forward's public address) are masqueraded to the host's bridge address, so their replies
  are routed as well. Reported as info when on, for what the firewall checks find about bridged
  frames (Docker loads it and sets FORWARD's policy to DROP).
"""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import stat
import time

from .daemons import QEMU_DAEMONS, Daemon, find_daemons
from .errors import PortfwdError
from .findings import FAIL, INFO, OK, WARN, Finding
from .shim import MARKER
from .survey import Survey, unreadable, when

HOST = "host"  # the subject of every finding here
PROC_SYS = "/proc/sys"
PROC_ROUTE = "/proc/net/route"
INSTALL = "# as root, from the libvirt-portfwd checkout:\n./install.sh"
_RELEASE = re.compile(r"(\d{8}T\d{6})-\d+")  # install.sh's release ids: UTC time of the install, pid


def check_hook(survey: Survey) -> list[Finding]:
    """The qemu hook: present, ours, executable, and its runtime there (fail: no forward follows
    a VM without it)."""
    return _hook_file(survey.paths.hook("qemu"), "hook.installed", FAIL, "the qemu hook")


def check_network_hook(survey: Survey) -> list[Finding]:
    """The network hook (warn: without it only the service or sync repairs a network restart)."""
    return _hook_file(survey.paths.hook("network"), "hook.network", WARN, "the network hook")


def _hook_file(path: str, id_: str, severity: str, what: str) -> list[Finding]:
    try:
        st = os.stat(path)
        with open(path, "rb") as handle:
            text = handle.read(4096).decode("utf-8", "replace")
    except FileNotFoundError:
        return [Finding(id_, severity, HOST, f"{what} is not installed", f"no file {path}", INSTALL)]
    except OSError as exc:
        return [unreadable(what, path, exc)]
    if MARKER not in text:
        return [
            Finding(
                "hook.foreign",
                severity,
                HOST,
                f"{what}'s place holds a file libvirt-portfwd did not write",
                f"{path}: no line '{MARKER}'",
                "# install.sh never overwrites it: if the program that wrote it still needs it, give it another\n"
                f"# name in {os.path.dirname(path)}, else remove it; then\n./install.sh",
            )
        ]
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
        return [
            Finding(
                id_,
                severity,
                HOST,
                f"{what} is not executable: libvirt skips it",
                f"{path}: mode {stat.filemode(st.st_mode)}",
                f"chmod 0755 {path}",
            )
        ]
    boot = _shim_value(text, "BOOT")
    if boot and not os.path.isfile(boot):
        return [
            Finding(
                id_,
                severity,
                HOST,
                f"{what} runs a runtime that is missing: each run says so and changes nothing",
                f"{path}: BOOT={boot}: no such file",
                f"# the installed runtime is gone: run install.sh again to repair\n{INSTALL}",
            )
        ]
    return [
        Finding(id_, OK, HOST, f"{what} is installed", f"{path}: {stat.filemode(st.st_mode)}, '{MARKER}', runs {boot}")
    ]


def check_hook_seen(survey: Survey) -> list[Finding]:
    """Does the running daemon run the qemu hook? libvirt looks for hooks when it starts (and at
    SIGHUP): a daemon started before any qemu hook existed never runs one added later. The hook
    file's ctime (install.sh renames it into place) against the daemon's start (daemons.py)."""
    path = survey.paths.hook("qemu")
    try:
        ctime = os.stat(path).st_ctime
    except OSError:
        return []  # check_hook said why
    try:
        daemons = find_daemons()
    except (OSError, ValueError) as exc:
        return [unreadable("the processes", "/proc", exc)]
    if not daemons:
        start = "systemctl start libvirtd" if survey.systemd else "# start libvirtd as this host does (libvirtd -d)"
        return [
            Finding(
                "daemon.running",
                WARN,
                HOST,
                "no libvirt daemon runs here: nothing runs the hook now (one that starts will)",
                f"no process named {' or '.join(QEMU_DAEMONS)} in /proc (in this network namespace)",
                start,
            )
        ]
    return [_seen(survey, daemon, path, ctime) for daemon in daemons]


def _seen(survey: Survey, daemon: Daemon, path: str, ctime: float) -> Finding:
    who = f"{daemon.comm} (pid {daemon.pid})"
    started = (
        f"{who} started {when(daemon.earliest)} (/proc/{daemon.pid}/stat starttime {daemon.starttime} / "
        f"CLK_TCK {daemon.clk_tck} + /proc/stat btime {daemon.btime})"
    )
    written = f"{path} written {when(ctime)} (its ctime)"
    if ctime < daemon.earliest:
        summary = f"{who} started after the hook was written: it runs it"
        return Finding("hook.seen", OK, HOST, summary, f"{started}; {written}")
    earlier = _hook_before(survey, path, daemon.earliest)
    if earlier:
        return Finding(
            "hook.seen",
            OK,
            HOST,
            f"{who} had a qemu hook when it started, so it reads qemu.d at every VM operation",
            f"{started}; {earlier}; {written}",
        )
    if ctime < daemon.latest:
        return Finding(
            "hook.seen",
            WARN,
            HOST,
            f"{who} started within a second of the hook being written: which came first cannot be told",
            f"{started}; {written}",
            _rescan(survey, daemon),
        )
    return Finding(
        "hook.seen",
        WARN if daemon.elsewhere is None else FAIL,  # as non-root: it may be another host's (a namespace)
        HOST,
        f"{who} started before the hook was written, with no qemu hook then: it does not run it"
        + (" (if it is this host's: its namespace cannot be read as this user)" if daemon.elsewhere is None else ""),
        f"{started}; {written}; no other qemu hook and no earlier installation of ours predates it "
        "(a SIGHUP since would have made it look again, and leaves no trace)",
        _rescan(survey, daemon),
    )


def _rescan(survey: Survey, daemon: Daemon) -> str:
    """libvirt looks for hooks again at a start and at SIGHUP (virHookInitialize, run by the
    daemon reload's virHookCall, in remote_daemon.c for libvirtd and the split daemons alike)."""
    if survey.systemd:
        return f"systemctl restart {daemon.comm}\n# running VMs keep running; the reconnect hook applies their forwards"
    return (
        f"kill -HUP {daemon.pid}\n# {daemon.comm} looks for hooks again at SIGHUP (its reload); this check cannot see\n"
        f"# a SIGHUP and says the same until {daemon.comm} restarts"
    )


def _hook_before(survey: Survey, ours: str, start: float) -> str:
    """Why the daemon had a qemu hook when it started, if anything shows it: another executable
    qemu hook older than its start, or an installation of ours older than it (install.sh keeps
    the previous release and names each by its time; a reinstall rewrites the hook)."""
    hooks = survey.paths.hook_dir
    others = [os.path.join(hooks, "qemu")]
    with contextlib.suppress(OSError):
        others += [os.path.join(hooks, "qemu.d", e) for e in sorted(os.listdir(os.path.join(hooks, "qemu.d")))]
    for other in others:
        if other == ours:
            continue
        try:
            st = os.stat(other)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111 and st.st_ctime < start:
            return f"{other} was there before ({when(st.st_ctime)})"
    try:
        with open(ours, "rb") as handle:
            boot = _shim_value(handle.read(4096).decode("utf-8", "replace"), "BOOT")
        if not os.path.isabs(boot):
            return ""
        releases = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(boot))), "releases")
        ids = [m.group(0) for m in map(_RELEASE.fullmatch, os.listdir(releases)) if m]
    except OSError:
        return ""
    for release in sorted(ids):
        installed = calendar.timegm(time.strptime(release.split("-")[0], "%Y%m%dT%H%M%S"))
        if installed < start:
            return f"our release {os.path.join(releases, release)} (installed {when(installed)}) predates it"
    return ""


def _shim_value(text: str, key: str) -> str:
    """A ``KEY=value`` line of the shim install.sh wrote (hooks/shim.sh)."""
    for line in text.splitlines():
        if line.startswith(f"{key}="):
            return line[len(key) + 1 :].strip()
    return ""


def check_config(survey: Survey) -> list[Finding]:
    path = survey.paths.config
    try:
        os.stat(path)
    except FileNotFoundError:
        return [Finding("config.valid", OK, HOST, "no config file: the defaults", f"no file {path}")]
    except OSError as exc:
        return [unreadable("the config", path, exc)]
    if not os.access(path, os.R_OK):
        return [unreadable("the config", path, PermissionError(13, "Permission denied"))]
    config = survey.config
    if isinstance(config, PortfwdError):
        return [
            Finding(
                "config.valid",
                FAIL,
                HOST,
                "the config does not load: the forwards it declares are not applied (no VM start is refused for it)",
                str(config),
                f"# correct {config.where or path} as the evidence says; then apply it to the running VMs:\n"
                "libvirt-portfwd sync",
            )
        ]
    return [
        Finding(
            "config.valid",
            OK,
            HOST,
            "the config loads",
            f"{path}: backend {config.backend}, on_error {config.on_error}, {len(config.domains)} domain(s) named",
        )
    ]


def check_access(survey: Survey) -> list[Finding]:
    """The recorded state this user may not read (root's only), said once: no domain is checked."""
    if not survey.unreadable:
        return []
    what = " and ".join(what for what, _ in survey.unreadable)
    paths = ", ".join(path for _, path in survey.unreadable)
    return [unreadable(what, paths, PermissionError(13, "Permission denied"))]


def check_ip_forward(survey: Survey) -> list[Finding]:
    path = os.path.join(PROC_SYS, "net/ipv4/ip_forward")
    value = _read(path)
    if value is None:
        return [unreadable("net.ipv4.ip_forward", path, OSError("not readable"))]
    if value != "0":
        return [Finding("sysctl.ip_forward", OK, HOST, "the host routes packets to its guests", f"{path}: {value}")]
    if os.path.isfile(survey.paths.sysctl_file):
        boot = (
            f"# {survey.paths.sysctl_file} (install.sh's) sets it at boot; something set it to 0 since: another\n"
            "# sysctl file? grep -r ip_forward /etc/sysctl.conf /etc/sysctl.d"
        )
    else:
        boot = f"# and at boot: ./install.sh writes {survey.paths.sysctl_file} (net.ipv4.ip_forward = 1); it is missing"
    return [
        Finding(
            "sysctl.ip_forward",
            FAIL,
            HOST,
            "net.ipv4.ip_forward is 0: the host routes no packet to a guest (every forward is dropped after its DNAT)",
            f"{path}: 0",
            f"sysctl -w net.ipv4.ip_forward=1\n{boot}",
        )
    ]


def check_rp_filter(survey: Survey) -> list[Finding]:
    conf = os.path.join(PROC_SYS, "net/ipv4/conf")
    try:
        names = os.listdir(conf)
    except OSError:
        return []
    values = {n: int(v) for n in names if (v := _read(os.path.join(conf, n, "rp_filter"))) and v.isdigit()}
    devs = {f.dev for r in survey.records for f in r.forwards if f.dev}
    return judge_rp_filter(values, _default_routes(_read(PROC_ROUTE) or ""), devs)


def judge_rp_filter(values: dict[str, int], defaults: list[str], devs: set[str]) -> list[Finding]:
    """Findings for ``rp_filter`` (interface or ``all`` -> value) where it can drop a forward's
    packets: strict on a forward's ``dev`` that no default route uses, or on one of several
    uplinks that carry default routes (see the module docstring)."""
    every = values.get("all", 0)
    strict = {n for n, v in values.items() if n not in ("all", "default", "lo") and max(v, every) == 1}
    findings = []
    for dev in sorted(devs):
        for name in sorted(n for n in strict if n == dev or (dev.endswith("+") and n.startswith(dev[:-1]))):
            if name not in defaults:
                findings.append(
                    Finding(
                        "sysctl.rp_filter",
                        WARN,
                        HOST,
                        f"strict reverse-path filtering on {name} drops a forward's clients that are not on {name}'s "
                        f"own networks: the route back to them leaves by {', '.join(defaults) or 'another interface'}",
                        _rp_evidence(values, name, defaults),
                        f"sysctl -w net.ipv4.conf.{name}.rp_filter=2\n# 2: loose, the larger of all and {name} counts",
                    )
                )
    uplinks = sorted(n for n in set(defaults) if n in strict)
    if len(set(defaults)) > 1 and uplinks:
        findings.append(
            Finding(
                "sysctl.rp_filter",
                INFO,
                HOST,
                f"several default routes ({', '.join(sorted(set(defaults)))}) and strict reverse-path filtering on "
                f"{', '.join(uplinks)}: a client whose packets come in by one uplink while its route leaves by another "
                "is dropped",
                "; ".join(_rp_evidence(values, n, defaults) for n in uplinks),
                "\n".join(f"sysctl -w net.ipv4.conf.{n}.rp_filter=2" for n in uplinks),
            )
        )
    return findings


def _rp_evidence(values: dict[str, int], name: str, defaults: list[str]) -> str:
    own, every = values.get(name, 0), values.get("all", 0)
    routes = ", ".join(defaults) or "none"
    return f"net.ipv4.conf.{name}.rp_filter = {own}, net.ipv4.conf.all.rp_filter = {every}; default route via {routes}"


def _default_routes(text: str) -> list[str]:
    """The interfaces of the default routes in ``/proc/net/route`` (the main table, IPv4)."""
    routes = [line.split() for line in text.splitlines()[1:]]
    return [r[0] for r in routes if len(r) > 7 and r[1] == "00000000" and r[7] == "00000000"]


def check_br_netfilter(survey: Survey) -> list[Finding]:
    path = os.path.join(PROC_SYS, "net/bridge/bridge-nf-call-iptables")
    if _read(path) != "1":
        return []
    return [
        Finding(
            "sysctl.br_netfilter",
            INFO,
            HOST,
            "br_netfilter is on: guest-to-guest frames pass the ip firewall (forwards are routed, not affected)",
            f"{path}: 1",
        )
    ]


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except (OSError, ValueError):
        return None
