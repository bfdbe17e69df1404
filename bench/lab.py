"""The benchmark's world: a source snapshot, its venv, three namespaces and a temporary root.

Everything lives under one temporary directory and in namespaces named ``pfb-{h,g,c}-<tag>``;
``destroy()`` ends the processes left in those namespaces (by pid), deletes the namespaces
and the directory. Nothing touches the root namespace's firewall, routes or interfaces.
"""

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
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
    "setup.cfg",
    "pyproject.toml",
    "README.md",
)
SYSTEM_ENV = {"PATH": scenario.HOOK_PATH, "LC_ALL": "C", "HOME": "/root"}


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
    hook: str
    cli: str
    source: str
    workdir: str
    kind: str = "iptables"  # libvirt's firewall on this host: iptables or nftables


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
        self.python = ""
        self.namespaces: list[str] = []
        self.servers: list[subprocess.Popen[str]] = []
        self.warnings: list[str] = []

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
        tar = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit, "--", *SNAPSHOT_PATHS],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(self.source)], input=tar, check=True)
        return f"git {ref} = {commit}"

    def build_venv(self, venv: Path | None) -> None:
        """A non-editable install from Debian's /usr/bin/python3, as install.sh makes it."""
        if venv is not None:
            self.python = str(venv / "bin" / "python3")
            return
        venv = self.workdir / "venv"
        sh("/usr/bin/python3", "-m", "venv", str(venv))
        pip = [str(venv / "bin" / "pip"), "--disable-pip-version-check", "-q", "install"]
        wheels = REPO / ".cache" / "wheels"
        try:
            if not wheels.is_dir():
                raise BenchError("no wheelhouse")
            sh(*pip, "--no-index", "--find-links", str(wheels), str(self.source), timeout=300)
        except BenchError:
            sh(*pip, str(self.source), timeout=600)
        self.python = str(venv / "bin" / "python3")
        self.check_templates(venv)

    def check_templates(self, venv: Path) -> None:
        """Every template of the checkout must be installed; a missing one is a packaging bug.

        It is reported (and kept in results.json) and copied in, so that the rest can be measured.
        """
        installed = venv / "share" / "libvirt-portfwd" / "templates"
        for template in sorted((self.source / "templates").glob("*.j2")):
            if not (installed / template.name).exists():
                warning = (
                    f"packaging bug: templates/{template.name} is not installed by a non-editable install "
                    f"(setup.cfg [options.data_files]); the benchmark copies it into {installed}"
                )
                log(f"WARNING: {warning}")
                self.warnings.append(warning)
                installed.mkdir(parents=True, exist_ok=True)
                shutil.copy2(template, installed / template.name)

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
        self._write("etc/libvirt-portfwd/config.yaml", (self.source / "templates" / "config.yaml").read_text())
        # install.sh's rewrite of hooks/qemu: the venv's interpreter with -I, the config path baked in
        lines = (self.source / "hooks" / "qemu").read_text().splitlines(keepends=True)
        lines[0] = f"#!{self.python} -I\n"
        text = "".join(lines).replace("\nCONFIG = None\n", f"\nCONFIG = {str(self.config)!r}\n")
        hook = self.hook
        self._write(str(hook.relative_to(self.root)), text)
        hook.chmod(0o755)

    @property
    def config(self) -> Path:
        return self.root / "etc" / "libvirt-portfwd" / "config.yaml"

    @property
    def hook(self) -> Path:
        return self.root / "etc" / "libvirt" / "hooks" / "qemu.d" / "libvirt-portfwd"

    def _write(self, relative: str, text: str) -> None:
        fakehost.write_atomic(self.root / relative, text)

    def info(self, description: str) -> LabInfo:
        return LabInfo(
            host=self.host,
            guest=self.guest,
            client=self.client,
            root=str(self.root),
            python=self.python,
            hook=str(self.hook),
            cli=str(Path(self.python).parent / "libvirt-portfwd"),
            source=description,
            workdir=str(self.workdir),
            kind=self.kind,
        )

    def write_info(self, path: Path, description: str) -> None:
        path.write_text(json.dumps(asdict(self.info(description)), indent=1))

    # -- cleanup ------------------------------------------------------------------------------
    def jinja2_cache_files(self) -> list[Path]:
        """The compiled templates our hook runs left in jinja2's per-user cache in /tmp.

        Commits before 1afbca4 kept them in jinja2's default FileSystemBytecodeCache (later ones in
        the run dir, under the temporary root), keyed by sha1("<name>|<template path>"): a
        temporary venv leaves entries nobody will use again (``--ref`` of such a commit).
        """
        templates = Path(self.python).parent.parent / "share" / "libvirt-portfwd" / "templates"
        cache = Path(tempfile.gettempdir()) / f"_jinja2-cache-{os.getuid()}"
        if not self.python or not str(templates).startswith(str(self.workdir)):
            return []  # not our venv (--venv): its cache entries stay useful
        keys = [hashlib.sha1(f"{t.name}|{t}".encode()).hexdigest() for t in sorted(templates.glob("*.j2"))]
        return [cache / f"__jinja2_{key}.cache" for key in keys]

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
