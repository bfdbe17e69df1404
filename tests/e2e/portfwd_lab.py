"""A stock host with libvirt-portfwd installed by its own install.sh, and what the scenarios need.

``PortfwdLab`` is a booted ``tests.lab.host.Lab`` (tests/lab/box.py: a stock Debian host,
systemd as PID 1, libvirtd and our units started by systemd, journald) whose libvirtd also logs
the commands it runs (``util.command`` at debug level, in libvirtd.conf): libvirt keeps a
hook's stderr only there when the hook succeeds. ``install`` copies the checkout into the host
and runs its install.sh there as an admin does (hooks, units, CLI, config and sysctl land in
the box, never on the machine), then restarts libvirtd as install.sh says; ``uninstall``
removes it again, inside the box too.

What differs from an admin's host, and only this: the box's uplink is configured from outside
after each boot (tests/lab/host.py), its packages come from the cached root (apt has nothing to
install), libvirtd's debug log of commands, journald's rate limit off, ``cgroup_controllers = [ ]`` in qemu.conf (this
machine's read-only cgroup v1), and, under libvirt's nftables backend, the tc wrapper
(tests/lab/tc_wrapper.sh: these kernels lack ``action csum``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e import ruleset
from tests.installed import CLI, CONFIG, HOOK, INSTALLED_PATHS, REPO
from tests.lab import guest as guest_module
from tests.lab.host import Guest, Lab, ProbeResult
from tests.lab.proc import LabError, namespace_pids

SRC = Path("/root/libvirt-portfwd")  # the checkout's copy inside the lab host, where an admin clones it

METADATA_URI = "urn:libvirt-portfwd:1"
# A record of libvirtd's log: "DATE: THREAD: LEVEL : [FUNCTION:LINE : ]MESSAGE" (a daemon's first
# lines, "libvirt version: ...", have no function).
_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\+\d{4}: (\d+): \w+ : (?:(\S+) : )?", re.M)
_HOOK_RUN = re.compile(re.escape(str(HOOK)) + r" (\S+) (\S+) (\S+) (\S+)\s*$")
LIBVIRT_NFT_CHAINS = ("guest_output", "guest_input", "guest_cross", "guest_nat")  # where libvirt's rules are
_HANDLE = re.compile(r"\s*# handle (\d+)$")
_RESULT = re.compile(r"Result status (-?\d+), stdout: '(.*)' stderr: '(.*)'\s*$", re.S)


class InstallError(Exception):
    """install.sh failed: a failure, never a skip."""


def checkout_files() -> list[Path]:
    """The checkout's files as a clone has them (tracked and new, not ignored), relative to REPO;
    every file but caches where REPO is no git checkout of its own (bench's snapshot)."""
    if (REPO / ".git").exists():
        argv = ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
        listing = subprocess.run(argv, capture_output=True, timeout=60, check=True).stdout.decode()
        return [Path(name) for name in sorted(set(listing.split("\0"))) if name]
    skip = {".git", ".cache", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
    return [
        path.relative_to(REPO)
        for path in sorted(REPO.rglob("*"))
        if path.is_file() and not skip.intersection(path.relative_to(REPO).parts)
    ]


def copy_checkout(lab: Lab) -> None:
    """The checkout into the lab host's root at SRC (a fresh copy each time, modes kept)."""
    target = lab.path(SRC)
    shutil.rmtree(target, ignore_errors=True)
    for name in checkout_files():
        source = REPO / name
        if source.is_file() and not source.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def install(lab: Lab, *, restart: bool = True) -> None:
    """``./install.sh`` as an admin runs it from a clone, inside the lab host's root (Lab's
    before_libvirtd): the hooks land in the root's /etc/libvirt/hooks, never the machine's. In a
    booted host libvirtd already runs: ``restart`` it then as install.sh says (or, to test
    what happens when an admin does not, leave it running)."""
    if isinstance(lab, PortfwdLab):
        lab.install_started = True
    copy_checkout(lab)
    began = time.monotonic()
    result = lab.run_in_host(install_sh(), cwd=SRC, timeout=600, check=False)
    lab.timings["install.sh"] = time.monotonic() - began
    if result.returncode != 0:
        raise InstallError(f"install.sh failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    missing = [path for path in (HOOK, CLI, CONFIG) if path not in installed_paths(lab)]
    if missing:
        raise InstallError(f"install.sh succeeded but left no {', '.join(map(str, missing))}:\n{result.stdout}")
    if lab.boot and restart:
        if RESTART_HINT not in result.stdout:
            raise InstallError(f"install.sh did not say how libvirtd picks up the hooks:\n{result.stdout}")
        lab.restart_libvirtd()  # as install.sh says (libvirtd had no hooks before)


RESTART_HINT = "systemctl restart libvirtd"


def install_sh(*args: str) -> list[str]:
    """argv of the copied install.sh inside the lab host."""
    return [str(SRC / "install.sh"), *args]


def installed_paths(lab: Lab) -> list[Path]:
    """What of an installation is in the lab host's root (``current`` is a link: an absolute
    target would resolve on the machine)."""
    return [path for path in INSTALLED_PATHS if lab.path(path).exists() or lab.path(path).is_symlink()]


def uninstall(lab: Lab) -> list[str]:
    """``./install.sh --uninstall`` in the lab host, then remove the config the tests wrote.
    Returns what went wrong (empty when all is gone)."""
    errors: list[str] = []
    result = lab.run_in_host(install_sh("--uninstall"), check=False, timeout=120, cwd=SRC)
    print(f"\ninstall.sh --uninstall (in {lab.host_ns}):\n{result.stdout}{result.stderr}", end="")
    if result.returncode != 0:
        errors.append(f"install.sh --uninstall: exit {result.returncode}: {result.stderr.strip()}")
    lab.path(CONFIG).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        lab.path(CONFIG.parent).rmdir()
    left = installed_paths(lab)
    if left:
        errors.append("left behind after uninstall: " + ", ".join(map(str, left)))
    return errors


@dataclass(frozen=True)
class HookRun:
    """One run of our hook as libvirtd logged it."""

    thread: str
    domain: str
    operation: str
    status: int | None  # None: no result logged yet
    stderr: str


@dataclass(frozen=True)
class StatusRow:
    domain: str
    uuid: str
    state: str
    forward: str
    guest: str
    live: str


WATCH_UNIT = "libvirt-portfwd.service"
SYNC_UNIT = "libvirt-portfwd-sync.service"
LOG_IDENTIFIER = "libvirt-portfwd"  # our lines in the journal (journalctl -t)


class PortfwdLab(Lab):
    """A booted Lab whose libvirtd logs the commands it runs, with libvirt-portfwd helpers; our
    watcher and boot sync are the units install.sh installed. Our ``backend: auto`` follows
    libvirt's, so ``firewall_backend`` is ours too."""

    install_started = False  # install.sh ran (so a failed start has something to remove)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("boot", True)
        super().__init__(**kwargs)

    @property
    def backend(self) -> str:
        return self.firewall_backend or "iptables"

    def start(self) -> None:
        super().start()
        try:
            self.start_watcher()
        except BaseException:
            with contextlib.suppress(LabError):
                self.close()
            raise

    def close(self) -> None:
        self.stop_watcher()
        super().close()

    # --- the watcher (its unit) and the journal --------------------------------------------------

    def start_watcher(self, timeout: float = 10.0) -> None:
        """``systemctl start`` the watcher's unit; returns once it follows the ruleset."""
        self.box.systemctl("start", WATCH_UNIT)
        deadline = time.monotonic() + timeout
        while not self._monitor_running():
            if time.monotonic() > deadline:
                raise LabError(f"{WATCH_UNIT} runs no nft monitor: {self.watcher_output()[-2000:]}")
            time.sleep(0.05)

    def stop_watcher(self) -> None:
        if self.boot and self._root is not None and self._root.running:
            self.box.systemctl("stop", WATCH_UNIT, check=False)

    def unit_state(self, unit: str) -> dict[str, str]:
        """``systemctl show`` of a unit: ActiveState, SubState, Result, ExecMainStatus, NRestarts."""
        keys = "ActiveState,SubState,Result,ExecMainStatus,NRestarts,UnitFileState"
        shown = self.box.systemctl("show", "-p", keys, unit, check=False).stdout
        return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)

    def watcher_output(self) -> str:
        """What the watcher's unit wrote (its journal, this boot)."""
        return self.box.journal("-b", "-o", "cat", "-u", WATCH_UNIT)

    def our_journal(self, *args: str, after: str = "") -> list[str]:
        """Our lines in the journal (``journalctl -t libvirt-portfwd``), message only; ``after``:
        only those after a cursor (journal_cursor), as the journal may drop its oldest entries."""
        cursor = [f"--after-cursor={after}"] if after else []
        return self.box.journal("-o", "cat", "-t", LOG_IDENTIFIER, *cursor, *args).splitlines()

    def journal_cursor(self) -> str:
        """Where our lines in the journal are now (the last one's cursor). Taken with the same
        match as our_journal: systemd 252 (Debian 12) skips the first matching entry after a
        cursor of an entry the match leaves out."""
        out = self.box.journal("-t", LOG_IDENTIFIER, "-n", "1", "--show-cursor", "-o", "cat")
        marks = [line for line in out.splitlines() if line.startswith("-- cursor: ")]
        return marks[-1].removeprefix("-- cursor: ") if marks else ""

    def _monitor_running(self) -> bool:
        for pid in self.pids():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"nft", b"monitor"]:
                    return True
        return False

    def pids(self) -> list[int]:
        """Every process in the lab host's network namespace (libvirtd, dnsmasq, ours, ...)."""
        return namespace_pids(self.host_ns)

    @property
    def libvirtd_log(self) -> Path:
        return self.workdir / "libvirtd.log"  # across reboots: libvirtd appends

    def _daemon_env(self) -> dict[str, str]:
        env = super()._daemon_env()
        env["LIBVIRT_LOG_FILTERS"] = "1:util.command"  # commands run, with a hook's stderr
        env["LIBVIRT_LOG_OUTPUTS"] = f"1:file:{self.libvirtd_log}"
        return env

    # --- libvirtd's record of our hook -------------------------------------------------------

    def hook_runs(self) -> list[HookRun]:
        """Every run of our hook in libvirtd's log, oldest first, with its exit status and stderr."""
        try:
            text = self.libvirtd_log.read_text(errors="replace")
        except OSError:
            return []
        starts = list(_LOG_RECORD.finditer(text))
        runs: list[HookRun] = []
        pending: dict[str, int] = {}  # thread -> index in runs of the run awaiting its result
        for i, match in enumerate(starts):
            body = text[match.end() : starts[i + 1].start() if i + 1 < len(starts) else len(text)]
            thread, where = match.group(1), match.group(2) or ""
            hook = _HOOK_RUN.search(body) if where.startswith("virCommandRunAsync") else None
            if hook is not None:
                pending[thread] = len(runs)
                runs.append(HookRun(thread, hook.group(1), hook.group(2), None, ""))
                continue
            result = _RESULT.search(body) if where.startswith("virCommandRun:") else None
            if result is not None and thread in pending:
                index = pending.pop(thread)
                runs[index] = dataclasses.replace(runs[index], status=int(result.group(1)), stderr=result.group(3))
        return runs

    def hook_stderr(self, domain: str) -> str:
        """Everything our hook wrote to stderr for domain, as libvirtd logged it."""
        return "\n".join(run.stderr for run in self.hook_runs() if run.domain == domain and run.stderr)

    def wait_for_hook(self, domain: str, operation: str, after: int, timeout: float = 60.0) -> HookRun:
        """Wait for a finished run of our hook (domain, operation) beyond the first `after` runs."""
        deadline = time.monotonic() + timeout
        while True:
            for hook_run in self.hook_runs()[after:]:
                if (hook_run.domain, hook_run.operation) == (domain, operation) and hook_run.status is not None:
                    return hook_run
            if time.monotonic() > deadline:
                raise AssertionError(f"libvirtd did not run our hook for {domain} {operation} within {timeout:.0f} s")
            time.sleep(0.1)

    # --- the CLI, the firewall -----------------------------------------------------------------

    def portfwd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The installed CLI, in the lab host namespace (where the rules are)."""
        return self.run_in_host([str(CLI), *args], check=check, timeout=120)

    def status(self) -> list[StatusRow]:
        """``libvirt-portfwd status``, one row per forward."""
        rows = []
        for line in self.portfwd("status").stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) == 7:
                domain, uuid, state, proto, claim, guest, live = fields
                rows.append(StatusRow(domain, uuid, state, f"{proto} {claim}", guest, live))
        return rows

    def ruleset(self) -> list[str]:
        """The host namespace's firewall, iptables and nftables, as comparable lines (ruleset.py)."""
        lines = ruleset.iptables_lines(self.run_in_host(["iptables-save"]).stdout)
        for family, table in ruleset.NFT_TABLES:
            listing = self.run_in_host(["nft", "list", "table", family, table], check=False)
            if listing.returncode == 0:
                lines += ruleset.nft_lines(listing.stdout, family, table)
        return lines

    def our_rules(self, lines: list[str] | None = None) -> list[str]:
        """Our chains, rules and elements in either backend, and our gate in libvirt's table."""
        return ruleset.ours(self.ruleset() if lines is None else lines)

    def libvirt_rules(self, lines: list[str] | None = None) -> list[str]:
        return ruleset.libvirt(self.ruleset() if lines is None else lines)

    def ours_on_top(self, lines: list[str] | None = None) -> list[str]:
        """Why our accept would not come first (empty: it does), in our backend."""
        return ruleset.accept_order_problems(self.ruleset() if lines is None else lines, self.backend)

    def iptables(self, *args: str) -> None:
        self.run_in_host(["iptables", "-w", *args])

    def nft(self, script: str) -> None:
        self.run_in_host(["nft", "-f", "-"], input=script)

    def flush_our_chains(self) -> None:
        """An admin's flush: every rule of our chains (and table) goes; chains and maps stay."""
        if self.backend == "iptables":
            for table in ("nat", "filter"):
                self.iptables("-t", table, "-F", "PORTFWD")
        else:
            self.nft("flush table ip libvirt_portfwd\n")

    def delete_our_rules(self) -> None:
        """What an admin's cleanup does: every rule of ours deleted, our chains (table) too."""
        if self.backend == "nftables":
            gates = self._nft_rules("ip", "libvirt_network", "guest_input", ours=True)
            self.nft(
                "".join(f"delete rule ip libvirt_network guest_input handle {h}\n" for h, _ in gates)
                + "delete table ip libvirt_portfwd\n"
            )
            return
        for table in sorted({line.split()[0] for line in self.ruleset() if not line.startswith("nft ")}):
            listing = self.run_in_host(["iptables", "-w", "-t", table, "-S"]).stdout.splitlines()
            chains = [line.split()[1] for line in listing if line.startswith("-N ") and self.our_rules([line])]
            for line in listing:
                words = shlex.split(line)
                if words[0] == "-A" and words[1] not in chains and self.our_rules([line]):
                    self.iptables("-t", table, "-D", *words[1:])
            for chain in chains:
                self.iptables("-t", table, "-F", chain)
            for chain in chains:
                self.iptables("-t", table, "-X", chain)

    def reload_libvirt_rules(self) -> None:
        """A firewalld-style reload: libvirt's rules deleted and inserted again, on top (no hook runs)."""
        if self.backend == "iptables":
            for table, chain, targets in (
                ("filter", "FORWARD", ("LIBVIRT_FWO", "LIBVIRT_FWI", "LIBVIRT_FWX")),
                ("nat", "POSTROUTING", ("LIBVIRT_PRT",)),
            ):
                for target in targets:
                    self.iptables("-t", table, "-D", chain, "-j", target)
                    self.iptables("-t", table, "-I", chain, "1", "-j", target)
            return
        script = []
        for chain in LIBVIRT_NFT_CHAINS:
            rules = self._nft_rules("ip", "libvirt_network", chain, ours=False)
            script += [f"delete rule ip libvirt_network {chain} handle {handle}" for handle, _ in rules]
            script += [f"insert rule ip libvirt_network {chain} {rule}" for _, rule in reversed(rules)]
        self.nft("\n".join(script) + "\n")

    def return_rules_to_libvirt(self) -> None:
        """After reload_libvirt_rules in nftables: libvirt deletes its rules by the handles it
        recorded, which the copies do not have. Delete the copies and have libvirt add its rules
        again (SIGHUP), so that it can remove them later (at net-destroy)."""
        if self.backend != "nftables":
            return
        script = [
            f"delete rule ip libvirt_network {chain} handle {handle}"
            for chain in LIBVIRT_NFT_CHAINS
            for handle, _ in self._nft_rules("ip", "libvirt_network", chain, ours=False)
        ]
        self.nft("\n".join(script) + "\n")
        self.sighup_libvirtd()

    def libvirt_handles(self) -> list[int]:
        """The handles of libvirt's nftables rules (new ones after libvirt reloaded them)."""
        if self.backend != "nftables":
            return []
        return [
            handle
            for chain in LIBVIRT_NFT_CHAINS
            for handle, _ in self._nft_rules("ip", "libvirt_network", chain, ours=False)
        ]

    def _nft_rules(self, family: str, table: str, chain: str, *, ours: bool) -> list[tuple[int, str]]:
        """(handle, rule) of a chain's rules, ours or not ours, in order (counters reset)."""
        listing = self.run_in_host(["nft", "-a", "list", "chain", family, table, chain]).stdout
        found = []
        for line in listing.splitlines():
            handle = _HANDLE.search(line)
            if handle is None or line.strip().startswith(("chain ", "table ")):
                continue
            rule = ruleset.nft_lines(f"chain {chain} {{\n{line[: handle.start()]}\n}}", family, table)[-1]
            if bool(ruleset.OURS.search(rule)) == ours:
                found.append((int(handle.group(1)), rule.split(": ", 1)[1]))
        return found

    # --- domains -------------------------------------------------------------------------------

    def define_guest(
        self, name: str, *, macs: Iterable[str] = (), metadata: str | None = None, extra_cmdline: str = ""
    ) -> Guest:
        """Define a lab guest without starting it; metadata is set as the README says, with virsh."""
        spec = self.guest_spec(name, macs=tuple(macs), extra_cmdline=extra_cmdline)
        guest = Guest(name, spec.resolved_uuid(), spec.resolved_hostname(), spec.resolved_macs(), spec.serial_log)
        self.guests[name] = guest
        self.define(guest_module.domain_xml(spec, self.image))
        if metadata is not None:
            self.set_metadata(name, metadata)
        return guest

    def set_metadata(self, name: str, metadata: str, *flags: str) -> None:
        """``virsh metadata DOM --uri urn:libvirt-portfwd:1 --key portfwd --config --set XML``."""
        self.virsh(
            "metadata", name, "--uri", METADATA_URI, "--key", "portfwd", *(flags or ("--config",)), "--set", metadata
        )

    def running_uuids(self) -> set[str]:
        return {line.strip() for line in self.virsh("list", "--uuid").stdout.splitlines() if line.strip()}


# --- forwards -------------------------------------------------------------------------------------


def port_forward(proto: str, ranges: Iterable[tuple[int, int | None]], **attrs: str) -> str:
    """``<portForward proto=... attrs><range start to/>...`` (to None: the same port)."""
    attributes = "".join(f' {key.replace("_", "-")}="{value}"' for key, value in attrs.items())
    body = "".join(f'<range start="{start}"' + (f' to="{to}"' if to else "") + "/>" for start, to in ranges)
    return f'<portForward proto="{proto}"{attributes}>{body}</portForward>'


def portfwd_metadata(*forwards: str) -> str:
    return "<portfwd>" + "".join(forwards) + "</portfwd>"


def random_mac(taken: Iterable[str] = ()) -> str:
    taken = {mac.lower() for mac in taken}
    while True:
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        if mac not in taken:
            return mac


def wait_for_answer(
    probe: Callable[[], ProbeResult], expected: bytes, timeout: float, what: str, interval: float = 0.1
) -> float:
    """Probe until the expected answer; the seconds it took. Fails with the last probe's error."""
    began = time.monotonic()
    while True:
        result = probe()
        if result.answer == expected:
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            got = result.error or repr(result.answer)
            raise AssertionError(f"{what}: no {expected!r} within {timeout:.0f} s (last probe: {got})")
        time.sleep(interval)


def write_config(lab: Lab, text: str) -> None:
    """Replace the lab host's config atomically (a new inode: the hook's parsed-config cache sees
    the change)."""
    config = lab.path(CONFIG)
    tmp = config.with_name(f".config.yaml.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(config)
