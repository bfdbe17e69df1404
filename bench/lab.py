"""The benchmark's world: a source snapshot, its runtime as install.sh installs it, three
namespaces and a temporary root.

The runtime is what the snapshot's own ``install.sh --stage`` builds (install.sh's own steps,
not a copy of them): a release directory compiled by /usr/bin/python3 and checked, the
``current`` link, the default config, the hooks (POSIX sh shims rendered by the release's
``hooks/boot.py shim``) and the CLI launcher, all under this lab's directory instead of /opt,
/etc and /usr/local. Everything lives under one temporary directory and in namespaces named
``pfb-{h,g,c}-<tag>``; ``destroy()`` ends the processes left in those namespaces (by pid),
deletes the namespaces and the directory. Nothing touches the root namespace's firewall,
routes or interfaces.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import scenario

REPO = Path(__file__).resolve().parent.parent
from tests.names import unique_suffix  # noqa: E402  (namespaces named as the tests name them)
from tests.netns import fakehost  # noqa: E402  (on sys.path: scenario put the checkout there)

SNAPSHOT_PATHS = (
    "libvirt_portfwd",
    "templates",
    "hooks",
    "systemd",
    "install.sh",
    "tests/__init__.py",
    "tests/data",
    "tests/lab",
    "tests/e2e/__init__.py",
    "tests/e2e/portfwd_lab.py",
    "tests/e2e/ruleset.py",
    "tests/installed.py",
    "tests/names.py",  # the lab names its namespaces and boxes with it
    "README.md",
)
SYSTEM_ENV = {"PATH": scenario.HOOK_PATH, "LC_ALL": "C", "HOME": "/root"}
PYTHON = "/usr/bin/python3"  # what install.sh, the hooks' shim and the CLI launcher run
RELEASE_LAYOUT = "hooks/boot.py"  # the release layout's entry point (1459d88); before it: a pip venv
STAGE_OPTION = "--stage)"  # install.sh's case label for the mode that builds the runtime elsewhere
# the resident service's subcommand: "serve" once the snapshot's CLI has it (the warm path), else
# the watcher it grew from ("watch"); same arguments (--root, --config) either way
SERVE_COMMAND = re.compile(r"""add_parser\(\s*["']serve["']""")


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


def sh(*argv: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(
        argv, input=input, capture_output=True, text=True, timeout=timeout, check=False, env=SYSTEM_ENV
    )
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class LabInfo:
    """What the measuring process (inside the host namespace) needs to know; JSON-able."""

    host: str
    guest: str
    client: str
    root: str
    python: str
    lib: str  # the code as the hooks find it: PREFIX/current (a link to the release directory)
    config: str  # the config path baked into the hooks and the CLI launcher
    hook: str
    cli: str
    source: str
    workdir: str
    kind: str = "iptables"  # libvirt's firewall on this host: iptables or nftables
    service: str = "watch"  # the resident service's CLI subcommand in this snapshot: serve or watch


class Lab:
    """``kind``: the firewall libvirt runs on this host, iptables (libvirt 9.0's rules loaded) or
    nftables (libvirt's ``ip libvirt_network`` table loaded, the networks' status naming it)."""

    def __init__(self, workdir: Path, kind: str = "iptables") -> None:
        self.kind = kind
        tag = unique_suffix()
        self.host, self.guest, self.client = f"pfb-h-{tag}", f"pfb-g-{tag}", f"pfb-c-{tag}"
        self.workdir = workdir
        self.source = workdir / "src"
        self.root = workdir / "root"
        self.prefix = workdir / "opt" / "libvirt-portfwd"  # install.sh's /opt/libvirt-portfwd
        self.python = PYTHON
        self.namespaces: list[str] = []
        self.servers: list[subprocess.Popen[str]] = []

    # -- the code under test ------------------------------------------------------------------
    def snapshot(self, ref: str | None) -> str:
        """Copy the package's files (the work tree, or ``ref`` via git archive) to workdir/src."""
        self.source.mkdir(parents=True)
        if ref is None:
            for rel in SNAPSHOT_PATHS:
                src, dst = REPO / rel, self.source / rel
                if src.is_dir():
                    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst)
            return "work tree"
        # git archive only reads objects: the index and the work tree stay as they are
        commit = sh("git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}").strip()
        present = sh("git", "-C", str(REPO), "ls-tree", "--name-only", commit, "--", *SNAPSHOT_PATHS).split()
        if RELEASE_LAYOUT not in sh("git", "-C", str(REPO), "ls-tree", "-r", "--name-only", commit, "--", "hooks"):
            raise BenchError(
                f"{ref} ({commit[:12]}) predates the release layout (no {RELEASE_LAYOUT}: a pip venv and a "
                "Python hooks/qemu); this benchmark measures the runtime as install.sh installs it since "
                "1459d88 and refuses older commits (their own bench/ measured them)"
            )
        tar = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit, "--", *present],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(self.source)], input=tar, check=True)
        if STAGE_OPTION not in (self.source / "install.sh").read_text():
            raise BenchError(
                f"{ref} ({commit[:12]}): its install.sh has no --stage, with which this benchmark builds the "
                "runtime exactly as install.sh installs it; the first commits of the release layout (from "
                "1459d88 up to the one that added --stage) are refused"
            )
        return f"git {ref} = {commit}"

    def stage(self) -> None:
        """The snapshot's ``install.sh --stage`` in the host namespace: its release, config, hooks
        and CLI, in this lab's directory."""
        install_sh = self.source / "install.sh"
        env = {
            **SYSTEM_ENV,
            "LIBVIRT_PORTFWD_PREFIX": str(self.prefix),
            "LIBVIRT_PORTFWD_CONFIG": str(self.config),
            "LIBVIRT_HOOKS_DIR": str(self.root / "etc" / "libvirt" / "hooks"),
            "LIBVIRT_PORTFWD_CLI": str(self.cli),
        }
        argv = ["ip", "netns", "exec", self.host, str(install_sh), "--stage"]  # in the host, as an admin would
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
        if proc.returncode != 0:
            raise BenchError(f"install.sh --stage: exit {proc.returncode}: {(proc.stdout + proc.stderr)[-2000:]}")
        for path in (self.hook, self.cli, self.config, self.lib / "hooks" / "boot.py"):
            if not path.is_file():
                raise BenchError(f"install.sh --stage did not write {path}")

    def service_command(self) -> str:
        """``serve`` if the staged release's CLI has that subcommand, else ``watch`` (its older name)."""
        cli = self.lib / "libvirt_portfwd" / "cli.py"
        return "serve" if cli.is_file() and SERVE_COMMAND.search(cli.read_text()) else "watch"

    @property
    def lib(self) -> Path:
        """Where the hooks and the CLI find the code: the ``current`` link, as install.sh writes them."""
        return self.prefix / "current"

    # -- namespaces ---------------------------------------------------------------------------
    def create(self) -> None:
        for ns in (self.host, self.guest, self.client):
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
        try:
            fakehost.build(
                self.host,
                self.guest,
                self.client,
                host_addresses=(scenario.HOST_ADDRESS, scenario.BULK_ADDRESS),
                client_address=scenario.CLIENT_ADDRESS,
                guest_mac=scenario.GUEST_MAC,
                guest_address=scenario.GUEST_ADDRESS,
                libvirt_firewall=self.kind,
                data=self.source / "tests" / "data",
            )
        except subprocess.CalledProcessError as exc:
            raise BenchError(f"{' '.join(exc.cmd)}: exit {exc.returncode}: {exc.stderr}") from None
        sh("ip", "netns", "exec", self.client, "sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000")

    def start_guest_server(self) -> None:
        """The guest's TCP service (tests/data/guest_server.py) on the data path's guest port."""
        server = self.source / "tests" / "data" / "guest_server.py"
        argv = ["ip", "netns", "exec", self.guest, self.python, str(server), "guest", str(scenario.WEB_GUEST_PORT), ""]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=SYSTEM_ENV)
        self.servers.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise BenchError("the guest server did not start")

    # -- the system files libvirt writes, the config, the installed hook ----------------------
    def write_root(self, bulk: int) -> None:
        self._write("run/libvirt/network/default.xml", scenario.default_network(self.kind))
        self._write("run/libvirt/network/bulk.xml", scenario.bulk_network(self.kind))
        self._write(
            "var/lib/libvirt/dnsmasq/virbr0.status", scenario.leases_json({scenario.GUEST_MAC: scenario.GUEST_ADDRESS})
        )
        self._write("var/lib/libvirt/dnsmasq/virbr1.status", scenario.leases_json(scenario.bulk_leases(bulk)))
        self.stage()  # the default config (templates/config.yaml), the hooks and the CLI, as install.sh writes them

    @property
    def config(self) -> Path:
        return self.root / "etc" / "libvirt-portfwd" / "config.yaml"

    @property
    def hook(self) -> Path:
        return self.root / "etc" / "libvirt" / "hooks" / "qemu.d" / "libvirt-portfwd"

    @property
    def cli(self) -> Path:
        return self.root / "usr" / "local" / "sbin" / "libvirt-portfwd"

    def _write(self, relative: str, text: str) -> None:
        fakehost.write_atomic(self.root / relative, text)

    def info(self, description: str) -> LabInfo:
        return LabInfo(
            host=self.host,
            guest=self.guest,
            client=self.client,
            root=str(self.root),
            python=self.python,
            lib=str(self.lib),
            config=str(self.config),
            hook=str(self.hook),
            cli=str(self.cli),
            source=description,
            workdir=str(self.workdir),
            kind=self.kind,
            service=self.service_command(),
        )

    def write_info(self, path: Path, description: str) -> None:
        path.write_text(json.dumps(asdict(self.info(description)), indent=1))

    # -- cleanup ------------------------------------------------------------------------------
    def jinja2_cache_files(self) -> list[Path]:
        """The compiled templates install.sh's self-check left in jinja2's per-user cache in /tmp.

        ``boot.py check`` loads every template of the new release while it is still
        ``<release>.partial``, with jinja2's default FileSystemBytecodeCache in /tmp (install.sh
        runs with SYSTEM_ENV: no TMPDIR; the hooks use the run dir, under the temporary root), keyed
        by sha1("<name>|<template path>"): entries for a path that exists no more, as every
        install.sh leaves them. The final path's too, should the check ever run there.
        """
        release = self.lib.resolve()
        if not str(release).startswith(str(self.workdir)):
            return []  # not staged (yet)
        cache = Path("/tmp") / f"_jinja2-cache-{os.getuid()}"
        paths = []
        for template in sorted((release / "templates").glob("*.j2")):
            for directory in (release.with_name(f"{release.name}.partial"), release):
                key = hashlib.sha1(f"{template.name}|{directory / 'templates' / template.name}".encode()).hexdigest()
                paths.append(cache / f"__jinja2_{key}.cache")
        return paths

    def destroy(self) -> None:
        for path in self.jinja2_cache_files():
            path.unlink(missing_ok=True)
        for proc in self.servers:
            proc.kill()
            proc.wait()
        for ns in self.namespaces:
            self._end_processes_in(ns)
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()

    def _end_processes_in(self, ns: str) -> None:
        """Whatever still runs in our namespace (a hook, a waiter we caused), by pid."""
        for attempt in range(20):
            pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).split()]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 15 if attempt < 10 else 9)
            time.sleep(0.1)
