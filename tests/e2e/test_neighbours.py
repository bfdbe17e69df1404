"""libvirt-portfwd beside the other firewall managers of a libvirt host (issue 15), with real
packets from the client, on the stock hosts where it works today.

Each test boots a host of its own (tests/e2e/neighbours.py sets the neighbour up as its users
run it, before install.sh, as on a host that had it first), then: a guest with a TCP and a UDP
forward answers the client; the guest's other ports stay closed; the guest's own connection to
a remote host on the forwarded port reaches that host (our DNAT does not take it); after the
neighbour's documented reload or restart the forwards answer again (and Docker's published port
too); stopping the guest removes our rules and leaves the neighbour's as they were (compared
with neighbours.rules, normalised: no counters or handles).

Every neighbour on every host (``WORKS``; tests/e2e/matrix.py picks CI's share), where only the
admin may open the way after doctor's fix is applied as the admin types it; NEIGHBOURS-FINDINGS.md
(beside this file) has what was measured before the product handled them. The one difference
from an admin's host beside those of every booted lab (portfwd_lab.py): Docker's runtime is
tests/lab/runc_nocgroups.py (no cgroups in a box).
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import neighbours
from tests.e2e.conftest import HOSTS, Host, Labs, own_portfwd_lab
from tests.e2e.portfwd_lab import PortfwdLab, install, port_forward, portfwd_metadata
from tests.e2e.scenario import (
    FORWARD_TIMEOUT,
    LEASE_TIMEOUT,
    http,
    note,
    start,
    udp,
    wait_forwards,
    wait_until,
)
from tests.lab.host import Guest, Lab

pytestmark = pytest.mark.e2e

TCP, UDP = 9080, 9353  # the guest's 80 and 5353; Docker publishes neighbours.DOCKER_PORT
CLIENT_BODY = "client-web\n"  # what the remote host (the client) serves on TCP
FETCHED = re.compile(r"^lab-init: fetch http://\S+: (.*)$")  # guest_init.sh's start_fetches
# Where each neighbour is tested (all of them now; matrix.py says which run by default).
WORKS = {
    "docker": ("debian12-iptables", "debian13-iptables", "debian13-nftables"),
    "firewalld": ("debian12-iptables", "debian13-iptables", "debian13-nftables"),
    "firewalld-strict": ("debian13-iptables", "debian13-nftables"),  # firewalld 1.3 has no such setting
    "ufw": ("debian12-iptables", "debian13-iptables", "debian13-nftables"),
    # The admin's own table: once doctor's lines are applied (only the admin may open it).
    "nftables": ("debian12-iptables", "debian13-iptables", "debian13-nftables"),
}
CLOSED_FOR = 5.0  # how long an unreachable forward is probed before doctor is asked


def hosts_for(name: str) -> list[Any]:
    """The hosts of conftest.HOSTS where the neighbour works today, as pytest params."""
    return [pytest.param(host, id=host.id) for host in HOSTS if host.id in WORKS.get(name, ())]


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Path]:
    """A directory the client serves on TCP (started per lab by serve_remote)."""
    (tmp_path / "index.html").write_text(CLIENT_BODY)
    yield tmp_path


def serve_remote(lab: Lab, directory: Path) -> subprocess.Popen[bytes]:
    """The remote host: an HTTP server in the client namespace on the forwarded port number."""
    argv = ["ip", "netns", "exec", lab.client_ns, "python3", "-m", "http.server", str(TCP), "-d", str(directory)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def neighbour_lab(labs: Labs, workdir: Path, host: Host, name: str) -> Iterator[PortfwdLab]:
    neighbour = neighbours.NEIGHBOURS[name]

    def installed(lab: Lab) -> None:
        neighbour.setup(lab)
        install(lab)

    with own_portfwd_lab(labs, workdir, host.release, host.firewall, installed) as lab:
        yield lab


def fetched(lab: PortfwdLab, guest: Guest) -> list[str]:
    """What the guest's own fetches of the remote host got (its serial log), oldest first; only
    whole lines (the console may be in the middle of one)."""
    lines = lab.serial_log(guest.name).split("\n")[:-1]
    return [m[1] for m in (FETCHED.match(line.rstrip("\r")) for line in lines) if m]


def apply_doctors_fix(lab: PortfwdLab, finding: str) -> str:
    """doctor fails and names ``finding``; its fix applied line by line as the admin types it
    (comment lines are for the admin to read). Returns the fix."""
    status, findings = doctor_findings(lab)
    named = [f for f in findings if f["id"] == finding and f["severity"] == "fail"]
    assert status != 0 and len(named) == 1, f"doctor (exit {status}) does not name {finding} once: {findings}"
    fix = named[0]["fix"]
    for line in fix.splitlines():
        if line.strip() and not line.startswith("#"):
            lab.run_in_host(shlex.split(line))
    return fix


def own_fetch(lab: PortfwdLab, guest: Guest, egress: bool) -> None:
    """The guest's own fetches of the remote host on the forwarded port number, two of them from
    now on: never taken by our DNAT (the guest's own answer); they reach the remote host, or
    where the neighbour drops the guests' own traffic (``egress`` False) they fail."""
    seen = len(fetched(lab, guest))
    wait_until(lambda: len(fetched(lab, guest)) > seen + 1, FORWARD_TIMEOUT, "two more fetches by the guest")
    assert set(fetched(lab, guest)[seen:]) == {CLIENT_BODY.strip() if egress else "failed"}, fetched(lab, guest)


def check_beside(lab: PortfwdLab, name: str, remote: Path, admin_fix: str | None = None, egress: bool = True) -> None:
    """The acceptance of issue 15 for one neighbour on one host; ``admin_fix``: the finding
    doctor names first, whose fix the admin applies before the forwards can work; ``egress``
    False: the neighbour drops the guests' own outgoing traffic (not ours to open)."""
    neighbour = neighbours.NEIGHBOURS[name]
    server = serve_remote(lab, remote)
    try:
        before = neighbours.rules(lab, name)
        forwards = portfwd_metadata(port_forward("tcp", [(TCP, 80)]), port_forward("udp", [(UDP, 5353)]))
        fetch = f"portfwd.fetch=http://{lab.client_addr}:{TCP}/"
        guest = lab.define_guest("web1", metadata=forwards, extra_cmdline=fetch)
        if admin_fix is None:
            start(lab, guest)
        else:  # no lease before the admin's fix: the start, then doctor's fix, then the lease
            lab.start_domain(guest.name)
            never_answers(lab, CLOSED_FOR)
            apply_doctors_fix(lab, admin_fix)
            guest.address = lab.wait_for_lease(guest.macs[0], LEASE_TIMEOUT, domain=guest.name)
        note(lab, f"{name}: start -> forwards answer", wait_forwards(lab, guest, TCP, UDP, LEASE_TIMEOUT))
        if admin_fix is not None:  # the admin's own rules now hold their fix (its reload done)
            before = neighbours.rules(lab, name)
        for result in (http(lab, 80), udp(lab, 5354)):
            assert not result.ok, f"an unforwarded port of the guest answers the client: {result.answer!r}"
        own_fetch(lab, guest, egress)
        if name == "docker":
            assert neighbours.docker_answers(lab), "Docker's published port does not answer"

        began = time.monotonic()
        neighbour.reload(lab)
        note(lab, f"{name}: {neighbour.reload_command}", time.monotonic() - began)
        note(lab, f"{name}: reload -> forwards answer", wait_forwards(lab, guest, TCP, UDP, FORWARD_TIMEOUT))
        if name == "docker":
            neighbours.wait_docker_port(lab)
        own_fetch(lab, guest, egress)

        lab.destroy("web1")
        wait_until(lambda: lab.our_rules() == [], 10.0, "our rules to go with the guest")
        assert neighbours.rules(lab, name) == before
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("host", hosts_for("docker"))
def test_beside_docker(labs: Labs, host: Host, remote: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Docker with FORWARD policy DROP and a published port: our forwards and Docker's both work.
    Under libvirt's nftables backend Docker's policy also drops the guests' own outgoing traffic
    (moby#52612: libvirt's, not ours to open), so there the guest's fetch fails, untaken."""
    with neighbour_lab(labs, tmp_path_factory.mktemp("docker"), host, "docker") as lab:
        check_beside(lab, "docker", remote, egress=host.firewall != "nftables")


@pytest.mark.parametrize("host", hosts_for("firewalld"))
def test_beside_firewalld(labs: Labs, host: Host, remote: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """firewalld (nftables backend), the uplink in zone public, libvirt's bridge in zone libvirt."""
    with neighbour_lab(labs, tmp_path_factory.mktemp("firewalld"), host, "firewalld") as lab:
        check_beside(lab, "firewalld", remote)


@pytest.mark.parametrize("host", hosts_for("firewalld-strict"))
def test_beside_firewalld_strict(
    labs: Labs, host: Host, remote: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """firewalld with StrictForwardPorts=yes (firewalld 2.3): it drops what it did not DNAT itself,
    by design; only the admin may decide: doctor names it with firewalld's own way (never an nft
    line into firewalld's table), the admin applies it, and the forwards work."""
    with neighbour_lab(labs, tmp_path_factory.mktemp("strict"), host, "firewalld-strict") as lab:
        check_beside(lab, "firewalld-strict", remote, "path.foreign_drop")


@pytest.mark.parametrize("host", hosts_for("ufw"))
def test_beside_ufw(labs: Labs, host: Host, remote: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """ufw enabled, DEFAULT_FORWARD_POLICY="DROP", ssh allowed. Under libvirt's nftables backend
    ufw's INPUT policy also drops the guests' DHCP (libvirt adds no input rules there): doctor
    names ufw's lines for it, the admin applies them, and the guest gets its lease."""
    nft = host.firewall == "nftables"  # ufw's FORWARD policy drops the guests' own traffic there too
    with neighbour_lab(labs, tmp_path_factory.mktemp("ufw"), host, "ufw") as lab:
        check_beside(lab, "ufw", remote, "path.foreign_input" if nft else None, egress=not nft)


def doctor_findings(lab: PortfwdLab) -> tuple[int, list[dict[str, str]]]:
    """``libvirt-portfwd doctor --json``: its exit status and every finding, wherever it is."""
    proc = lab.portfwd("doctor", "--json", check=False)
    found: list[dict[str, str]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "id" in node and "severity" in node:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(proc.stdout))
    return proc.returncode, found


def never_answers(lab: PortfwdLab, seconds: float) -> None:
    """Neither forward answers the client for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for result in (http(lab, TCP), udp(lab, UDP)):
            assert not result.ok, f"the forward answers through the admin's policy drop: {result.answer!r}"


def outside_libvirts(lines: list[str]) -> list[str]:
    """Rule lines (ruleset.py's) not in libvirt's nftables table, sorted."""
    return sorted(line for line in lines if " libvirt_network " not in line)


def check_admins_nftables(lab: PortfwdLab) -> None:
    """The admin's inet filter drops forwarded packets by policy: unreachable; doctor names the
    finding and one line; that line applied as the admin would (live, and into
    /etc/nftables.conf); reachable; after ``systemctl restart nftables`` (the file's ``flush
    ruleset`` deletes every table, libvirt's and ours too) our watcher rebuilds ours and the
    forwards answer; libvirt's rules come back when libvirtd restarts, our gate in them too; our removal
    leaves the admin's table as it is with the line."""
    forwards = portfwd_metadata(port_forward("tcp", [(TCP, 80)]), port_forward("udp", [(UDP, 5353)]))
    fetch = f"portfwd.fetch=http://{lab.client_addr}:{TCP}/"
    guest = lab.define_guest("web1", metadata=forwards, extra_cmdline=fetch)
    start(lab, guest)
    wait_until(lambda: lab.our_rules() != [], FORWARD_TIMEOUT, "our rules")
    never_answers(lab, CLOSED_FOR)

    fix = apply_doctors_fix(lab, "path.foreign_drop")  # as the admin types it
    lines = [line for line in fix.splitlines() if not line.startswith("#")]
    assert lines and all(line.startswith("nft insert rule inet filter forward ") for line in lines), fix
    assert "/etc/nftables.conf" in fix  # doctor says to keep it
    for line in lines:
        neighbours.persist_nft_rule(lab, line)  # and the admin keeps it
    admins = neighbours.rules(lab, "nftables")
    note(lab, "nftables: doctor's line -> forwards answer", wait_forwards(lab, guest, TCP, UDP, FORWARD_TIMEOUT))
    for result in (http(lab, 80), udp(lab, 5354)):
        assert not result.ok, f"an unforwarded port of the guest answers the client: {result.answer!r}"
    status, findings = doctor_findings(lab)
    assert status == 0 and not [f for f in findings if f["id"] == "path.foreign_drop"], findings
    # The admin's policy drops the guest's own traffic (nothing in their table lets it out), so the
    # guest's fetch fails; taken by our DNAT it would have been accepted (doctor's line accepts our
    # DNATed connections) and answered by a guest.
    seen = len(fetched(lab, guest))
    wait_until(lambda: len(fetched(lab, guest)) > seen + 1, FORWARD_TIMEOUT, "two more fetches by the guest")
    assert set(fetched(lab, guest)[seen:]) == {"failed"}, fetched(lab, guest)[seen:]

    ours = sorted(lab.our_rules())
    libvirts = sorted(lab.libvirt_rules())
    began = time.monotonic()
    neighbours.restart_nftables(lab)
    note(lab, "nftables: systemctl restart nftables", time.monotonic() - began)
    note(lab, "nftables: restart -> forwards answer", wait_forwards(lab, guest, TCP, UDP, FORWARD_TIMEOUT))
    assert neighbours.rules(lab, "nftables") == admins  # the file has the line
    # Our own table is back (the watcher); libvirt's table, and our gate in it, are not.
    wait_until(lambda: outside_libvirts(lab.our_rules()) == outside_libvirts(ours), FORWARD_TIMEOUT, "our table")
    print(f"after systemctl restart nftables: libvirt's rules {len(lab.libvirt_rules())} of {len(libvirts)}")
    print(f"our rules {len(lab.our_rules())} of {len(ours)}, {len(outside_libvirts(ours))} outside libvirt's table")
    # libvirt's own rules back. Not by `systemctl reload libvirtd`: libvirt 11.3 then deletes its
    # rules by handle and inserts them into its chains again, and with its table gone both fail
    # ("No such file or directory", findings); its restart creates its table afresh.
    note(lab, "nftables: systemctl restart libvirtd", lab.restart_libvirtd())
    wait_until(lambda: sorted(lab.libvirt_rules()) == libvirts, FORWARD_TIMEOUT, "libvirt's rules after its restart")
    wait_until(lambda: sorted(lab.our_rules()) == ours, FORWARD_TIMEOUT, "our rules, the gate in libvirt's too")
    note(lab, "nftables: libvirtd restart -> forwards answer", wait_forwards(lab, guest, TCP, UDP, FORWARD_TIMEOUT))

    lab.destroy("web1")
    wait_until(lambda: lab.our_rules() == [], 10.0, "our rules to go with the guest")
    assert neighbours.rules(lab, "nftables") == admins


@pytest.mark.parametrize("host", hosts_for("nftables"))
def test_beside_admins_nftables(labs: Labs, host: Host, remote: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """An admin's /etc/nftables.conf (flush ruleset; inet filter, forward policy drop): doctor's
    line, then reachable; survives systemctl restart nftables."""
    with neighbour_lab(labs, tmp_path_factory.mktemp("nftables"), host, "nftables") as lab:
        server = serve_remote(lab, remote)
        try:
            check_admins_nftables(lab)
        finally:
            server.terminate()
            server.wait(timeout=10)
