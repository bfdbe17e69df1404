"""A libvirt-like host in throwaway network namespaces, for rules tested with real packets.

    client (203.0.113.2) --veth-- host (203.0.113.10, .11; virbr0 192.168.122.1/24) --veth-- guest
                                   libvirt's own iptables rules loaded           (192.168.122.178)

The guest is a namespace running tests/data/guest_server.py; the host's system paths (network
status, leases, config, state) live under a temporary root (LIBVIRT_PORTFWD_ROOT). Nothing
touches the root namespace.
"""

import contextlib
import json
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_portfwd import names
from tests.conftest import DATA, HOOK, PYTHON, REPO, need_root
from tests.names import unique_suffix
from tests.netns.fakehost import (
    CLIENT_ADDRESS,
    GUEST_ADDRESS,
    GUEST_MAC,
    HOOK_PATH,
    HOST_ADDRESS,
    HOST_ADDRESS_2,
    build,
    leases_json,
    network_status,
    write_atomic,
)


def portfwd_metadata(*forwards: str) -> str:
    """Metadata exactly as libvirt stores what `virsh metadata --key portfwd` set."""
    body = "".join(forwards)
    return f'<portfwd:portfwd xmlns:portfwd="urn:libvirt-portfwd:1">{body}</portfwd:portfwd>'


def port_forward(proto: str, ranges: list[tuple[int, int | None]], **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    body = "".join(f'<portfwd:range start="{start}"' + (f' to="{to}"' if to else "") + "/>" for start, to in ranges)
    return f'<portfwd:portForward proto="{proto}"{extra}>{body}</portfwd:portForward>'


def sh(*argv: str, check: bool = True, input: str | None = None, timeout: float = 30) -> str:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


class Lab:
    """Three namespaces and a temporary system root; see the module docstring."""

    def __init__(self, tmp: Path, kind: str = "iptables") -> None:
        self.kind = kind  # libvirt's firewall backend this host imitates: iptables or nftables
        tag = unique_suffix()
        self.host, self.guest, self.client = f"pfh-{tag}", f"pfg-{tag}", f"pfc-{tag}"
        self.root = tmp / "root"
        self.servers: list[subprocess.Popen[str]] = []
        self.reservations: dict[str, str] = {}
        self.extra_namespaces: list[str] = []
        self.hook_path = HOOK_PATH  # the PATH libvirtd gives hooks

    # -- setup -------------------------------------------------------------------------------
    def create(self) -> None:
        for ns in (self.host, self.guest, self.client):
            sh("ip", "netns", "add", ns)
        build(
            self.host,
            self.guest,
            self.client,
            host_addresses=(HOST_ADDRESS, HOST_ADDRESS_2),
            client_address=CLIENT_ADDRESS,
            guest_mac=GUEST_MAC,
            guest_address=GUEST_ADDRESS,
            libvirt_firewall=self.kind,
            data=DATA,
        )
        self.write_network()
        self.write_leases({GUEST_MAC: GUEST_ADDRESS})
        self.write_config("lease_wait: 20\n")
        self.start_guest_service("guest", tcp=(22, 80, 443), udp=(5353,), hold=True)

    def destroy(self) -> None:
        for proc in self.servers:
            proc.kill()
            proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)  # any waiter sees its record gone and exits
        for ns in (self.host, self.guest, self.client, *self.extra_namespaces):
            sh("ip", "netns", "del", ns, check=False)

    def add_neighbour(self, address: str = "192.168.122.179", mac: str = "52:54:00:aa:bb:dd") -> str:
        """Another guest on the same bridge (a namespace; nothing served): returns its namespace."""
        ns = f"{self.guest}-2"
        sh("ip", "netns", "add", ns)
        self.extra_namespaces.append(ns)
        self.ip(ns, "link", "set", "lo", "up")
        self.ip(self.host, "link", "add", "vnet1", "type", "veth", "peer", "name", "eth0", "netns", ns)
        self.ip(self.host, "link", "set", "vnet1", "master", "virbr0", "up")
        self.ip(ns, "link", "set", "eth0", "address", mac, "up")
        self.ip(ns, "addr", "add", f"{address}/24", "dev", "eth0")
        self.ip(ns, "route", "add", "default", "via", "192.168.122.1")
        return ns

    def start_guest_service(self, name: str, tcp: tuple[int, ...], udp: tuple[int, ...], hold: bool = False) -> None:
        """guest_server.py in the guest; ``hold``: TCP connections stay open, each line answered."""
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.guest,
                PYTHON,
                str(DATA / "guest_server.py"),
                name,
                ",".join(map(str, tcp)),
                ",".join(map(str, udp)),
                *(["hold"] if hold else []),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        self.servers.append(proc)

    # -- the system files libvirt writes ------------------------------------------------------
    def write_network(self) -> None:
        status = network_status(libvirt_firewall=self.kind, reservations=self.reservations)
        self._write("run/libvirt/network/default.xml", status)

    def write_leases(self, leases: dict[str, str], expiry: int | None = None) -> None:
        self._write("var/lib/libvirt/dnsmasq/virbr0.status", leases_json(leases, expiry))

    def write_config(self, text: str) -> None:
        self._write("etc/libvirt-portfwd/config.yaml", text)

    def _write(self, relative: str, text: str) -> None:
        write_atomic(self.root / relative, text)

    # -- running things ----------------------------------------------------------------------
    def ip(self, ns: str, *args: str) -> str:
        return sh("ip", "-n", ns, *args)

    def exec(self, ns: str, *argv: str, input: str | None = None, check: bool = True) -> str:
        return sh("ip", "netns", "exec", ns, *argv, input=input, check=check)

    def enter(self) -> list[str]:
        """The prefix that runs a command in the host."""
        return ["ip", "netns", "exec", self.host]

    def watcher_argv(self) -> list[str]:
        """``libvirt-portfwd serve`` in the host, as its service runs it."""
        return [*self.enter(), PYTHON, "-m", "libvirt_portfwd.cli", "--root", str(self.root), "serve"]

    def service_counts(self) -> dict[str, int]:
        """What the running service says it did (run/libvirt-portfwd/service.json); {} if none."""
        try:
            return dict(json.loads((self.root / "run/libvirt-portfwd/service.json").read_text()))
        except (OSError, ValueError):
            return {}

    def pending(self) -> list[str]:
        """The intents not carried out yet (file names)."""
        intents = self.root / "run/libvirt-portfwd/intents"
        return sorted(p.name for p in intents.iterdir() if not p.name.endswith(".tmp")) if intents.exists() else []

    def hook_argv(self, name: str, operation: str, sub: str = "begin", extra: str = "-") -> list[str]:
        """The hook as libvirt runs it: its environment only, inside the host namespace."""
        env = [f"PATH={self.hook_path}", "LC_ALL=C", "HOME=/root", "PWD=/", f"LIBVIRT_PORTFWD_ROOT={self.root}"]
        return [*self.enter(), "env", "-i", *env, str(HOOK), name, operation, sub, extra]

    def hook(
        self, name: str, xml: str, operation: str, sub: str = "begin", timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.hook_argv(name, operation, sub), input=xml, capture_output=True, text=True, timeout=timeout, cwd="/"
        )

    def start(self, name: str, xml: str) -> list[subprocess.CompletedProcess[str]]:
        """Every qemu hook call libvirt makes for one start, in order."""
        return [self.hook(name, xml, op) for op in ("prepare", "start", "started")]

    def stop(self, name: str, xml: str) -> list[subprocess.CompletedProcess[str]]:
        return [self.hook(name, xml, "stopped", "end"), self.hook(name, xml, "release", "end")]

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["ip", "netns", "exec", self.host, PYTHON, "-m", "libvirt_portfwd.cli", "--root", str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    def probe(
        self, proto: str, port: int, address: str = HOST_ADDRESS, timeout: float = 2.0, ns: str | None = None
    ) -> str:
        """What the client (or ``ns``) gets back from address:port ("ERROR ..." when nothing answered)."""
        return self.exec(
            ns or self.client, PYTHON, str(DATA / "client_probe.py"), proto, address, str(port), str(timeout)
        ).strip()

    def wait_for(self, proto: str, port: int, expected: str, within: float) -> float:
        """Seconds until the client gets ``expected`` back; fails after ``within`` seconds."""
        begin = time.monotonic()
        while True:
            got = self.probe(proto, port, timeout=0.5)
            if got.startswith(expected):
                return time.monotonic() - begin
            if time.monotonic() - begin > within:
                raise AssertionError(f"{proto} {port}: got {got!r}, expected {expected!r} within {within} s")
            time.sleep(0.05)

    def firewall(self) -> str:
        """The host namespace's whole ruleset, without counters and comment lines."""
        if self.kind == "iptables":
            out = sh(*self.enter(), "iptables-save")
            return "\n".join(
                line.split(" [")[0] if line.startswith(":") else line
                for line in out.splitlines()
                if not line.startswith("#")
            )
        out = self.exec(self.host, "nft", "list", "ruleset")
        return "\n".join(re.sub(r"counter packets \d+ bytes \d+", "counter", line) for line in out.splitlines())

    def our_rules(self) -> list[str]:
        if self.kind == "nftables":
            return [
                line.strip()
                for line in self.firewall().splitlines()
                if "libvirt-portfwd" in line or "@dnat" in line or "@jump" in line
            ]
        return [
            line
            for line in self.firewall().splitlines()
            if "PORTFWD" in line
            or "libvirt-portfwd" in line
            or any(names.is_domain_chain(word.lstrip(":")) for word in line.split())
        ]

    def flush_ours(self) -> None:
        """What an admin's hand (or a firewall reload) does to our rules."""
        if self.kind == "nftables":
            self.exec(self.host, "nft", "delete", "table", "ip", names.NFT_TABLE)
            listing = self.exec(self.host, "nft", "-a", "list", "chain", "ip", "libvirt_network", "guest_input")
            for line in listing.splitlines():
                if "libvirt-portfwd" in line:
                    handle = line.rsplit("# handle ", 1)[1].strip()
                    self.exec(
                        self.host, "nft", "delete", "rule", "ip", "libvirt_network", "guest_input", "handle", handle
                    )
            return
        for table in ("nat", "filter"):
            for line in self.exec(self.host, "iptables", "-t", table, "-S").splitlines():
                if line.startswith("-A PORTFWD") or (
                    line.startswith(("-A FORWARD", "-A PREROUTING")) and "PORTFWD" in line
                ):
                    self.exec(self.host, "iptables", "-t", table, "-D", *shlex.split(line)[1:])

    def records(self) -> dict[str, dict]:  # type: ignore[type-arg]
        state = self.root / "run/libvirt-portfwd/domains"
        return {p.stem: json.loads(p.read_text()) for p in state.glob("*.json")} if state.exists() else {}


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    need_root()
    if shutil.which("iptables-restore") is None:
        pytest.fail("iptables is not installed (the test command installs it)")
    lab = Lab(tmp_path, getattr(request, "param", "iptables"))
    try:
        lab.create()
        yield lab
    finally:
        lab.destroy()


@contextlib.contextmanager
def running_service(lab: Lab) -> Iterator[subprocess.Popen[str]]:
    """``libvirt-portfwd serve`` in the lab's host, as its unit runs it (stderr kept), once it
    listens on its socket (it follows the ruleset from then on)."""
    proc = subprocess.Popen(lab.watcher_argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        began = time.monotonic()
        while not lab.service_counts():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() - began < 10.0, "the service did not listen within 10 s"
            time.sleep(0.02)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def watcher(lab: Lab) -> Iterator[subprocess.Popen[str]]:
    """The resident service, running beside the test."""
    with running_service(lab) as proc:
        yield proc


IN_PROCESS, SERVICE = "in-process", "service"


@pytest.fixture
def mode(lab: Lab, request: pytest.FixtureRequest) -> Iterator[str]:
    """The hooks' two modes (parametrize indirectly): each does its work itself, or hands it to
    the running service (warm.py); the service must still be running at the end."""
    kind = getattr(request, "param", IN_PROCESS)
    if kind != SERVICE:
        yield kind
        return
    with running_service(lab) as proc:
        yield kind
        assert proc.poll() is None, proc.communicate()[1]
