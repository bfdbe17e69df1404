"""doctor's pure parts: the lease verdict at a fixed time, rp_filter where it matters, the checks
of the hook file and the config on real files, and the rendering (text and JSON) of a report.
(A daemon's start time from /proc: test_daemons.py.)"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from libvirt_portfwd import doctor, domainchecks, hostchecks, state
from libvirt_portfwd.config import Config
from libvirt_portfwd.domainchecks import judge_lease
from libvirt_portfwd.findings import FAIL, INFO, OK, WARN, Finding
from libvirt_portfwd.leases import lease_path
from libvirt_portfwd.model import Forward
from libvirt_portfwd.paths import Paths
from libvirt_portfwd.records import Record
from libvirt_portfwd.shim import MARKER, render
from libvirt_portfwd.survey import DomainView, ForwardView, Survey, survey
from tests.conftest import REPO
from tests.netns.fakehost import network_status

NOW = 1_800_000_000
MAC = "52:54:00:aa:bb:cc"
G1, G2 = IPv4Address("192.168.122.178"), IPv4Address("192.168.122.179")


# -- the lease verdict ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leases", "recorded", "verdict", "address"),
    [
        ([(MAC, G1, NOW + 60)], G1, "current", G1),
        ([(MAC, G1, 0)], G1, "current", G1),  # 0: never expires
        ([(MAC, G1, NOW + 4)], G1, "current", G1),  # 4 s left: still counts (as load_leases)
        ([(MAC, G1, NOW + 2)], G1, "expired", G1),  # within EXPIRY_MARGIN: no longer (as load_leases)
        ([(MAC, G2, NOW + 60)], G1, "moved", G2),
        ([(MAC, G1, NOW - 1)], G1, "expired", G1),
        ([(MAC, G1, NOW - 900), (MAC, G2, NOW - 60)], G1, "expired", G2),  # the latest expired one
        ([(MAC, G1, NOW - 60), (MAC, G2, NOW + 60)], G1, "moved", G2),  # what a start would use now
        ([("52:54:00:00:00:01", G1, NOW + 60)], G1, "missing", None),
        ([], G1, "missing", None),
        ([(MAC, G2, NOW + 60)], None, "current", G2),  # waiting: a lease is there now
        ([(MAC, G2, NOW - 60)], None, "expired", G2),
    ],
    ids=[
        "current",
        "infinite",
        "expires-soon",
        "within-the-margin",
        "moved",
        "expired",
        "latest-expired",
        "renewed-elsewhere",
        "other-mac",
        "empty",
        "waiting-arrived",
        "waiting-expired",
    ],
)
def test_lease_verdict(
    leases: list[tuple[str, IPv4Address, int]],
    recorded: IPv4Address | None,
    verdict: str,
    address: IPv4Address | None,
) -> None:
    kind, lease = judge_lease(leases, MAC, recorded, NOW)
    assert kind == verdict
    assert (lease[1] if lease else None) == address


# -- rp_filter where it matters ---------------------------------------------------------------


def test_rp_filter_matters_only_off_the_default_route_or_with_several() -> None:
    judge = hostchecks.judge_rp_filter
    # one uplink carrying the default route: strict mode cannot drop a forwarded packet
    assert judge({"all": 1, "eth0": 1, "virbr0": 1}, ["eth0"], set()) == []
    assert judge({"all": 1, "eth0": 1}, ["eth0"], {"eth0"}) == []
    # a forward's dev that the default route does not use, strict (all or its own counts, the larger)
    [finding] = judge({"all": 0, "eth0": 0, "eth1": 1}, ["eth0"], {"eth1"})
    assert (finding.id, finding.severity) == ("sysctl.rp_filter", WARN)
    assert finding.fix.splitlines()[0] == "sysctl -w net.ipv4.conf.eth1.rp_filter=2"
    assert "default route via eth0" in finding.evidence
    [finding] = judge({"all": 1, "eth0": 0, "eth1": 0}, ["eth0"], {"eth+"})  # a dev prefix
    assert "eth1" in finding.summary
    assert judge({"all": 0, "eth0": 0, "eth1": 2}, ["eth0"], {"eth1"}) == []  # loose
    # several default routes: info for the strict uplinks
    [finding] = judge({"all": 0, "eth0": 1, "eth1": 0}, ["eth0", "eth1"], set())
    assert (finding.severity, finding.fix) == (INFO, "sysctl -w net.ipv4.conf.eth0.rp_filter=2")


# -- the hook file and the config, on real files ------------------------------------------------


def host_findings(tmp_path: Path, check: str) -> list[Finding]:
    findings: list[Finding] = getattr(hostchecks, check)(Survey(Paths(root=str(tmp_path))))
    return findings


def test_the_hook_file(tmp_path: Path) -> None:
    hook = Path(Paths(root=str(tmp_path)).hook("qemu"))
    [missing] = host_findings(tmp_path, "check_hook")
    assert (missing.id, missing.severity, missing.fix.splitlines()[-1]) == ("hook.installed", FAIL, "./install.sh")
    hook.parent.mkdir(parents=True)
    hook.write_text("#!/bin/sh\necho another program's hook\n")
    hook.chmod(0o755)
    [foreign] = host_findings(tmp_path, "check_hook")
    assert (foreign.id, foreign.severity) == ("hook.foreign", FAIL)
    hook.write_text(render("qemu", "", str(REPO)))
    hook.chmod(0o644)
    [mode] = host_findings(tmp_path, "check_hook")
    assert (mode.id, mode.severity, mode.fix) == ("hook.installed", FAIL, f"chmod 0755 {hook}")
    hook.chmod(0o755)
    [ok] = host_findings(tmp_path, "check_hook")
    assert (ok.id, ok.severity) == ("hook.installed", OK)
    hook.write_text(render("qemu", "", str(tmp_path / "gone")))  # a runtime that is not there
    [gone] = host_findings(tmp_path, "check_hook")
    assert (gone.severity, gone.evidence) == (FAIL, f"{hook}: BOOT={tmp_path}/gone/hooks/boot.py: no such file")
    [network] = host_findings(tmp_path, "check_network_hook")
    assert (network.id, network.severity) == ("hook.network", WARN)


def test_the_marker_is_the_one_install_sh_writes() -> None:
    assert f'MARKER="{MARKER}"' in (REPO / "install.sh").read_text()
    assert f"# {MARKER} " in (REPO / "hooks" / "shim.sh").read_text()


def test_the_config(tmp_path: Path) -> None:
    [absent] = host_findings(tmp_path, "check_config")
    assert (absent.id, absent.severity) == ("config.valid", OK)
    config = Path(Paths(root=str(tmp_path)).config)
    config.parent.mkdir(parents=True)
    config.write_text("backend: pf\n")
    [bad] = host_findings(tmp_path, "check_config")
    assert (bad.id, bad.severity) == ("config.valid", FAIL)
    assert bad.evidence.startswith(f"libvirt-portfwd: invalid config ({config}: backend): expected one of auto")
    assert bad.fix.splitlines()[-1] == "libvirt-portfwd sync"
    assert not (tmp_path / "run").exists()  # read only: no config cache was written


# -- rendering ----------------------------------------------------------------------------------

UUID = "6f1d0c9a-6a3b-4c55-9a3e-2f0b6f6a1c01"


def forward(guest: IPv4Address | None = G1, start: int = 20443, end: int = 20443) -> Forward:
    return Forward("tcp", IPv4Address("203.0.113.10"), None, (), start, end, 443, MAC, "virbr0", guest, "metadata")


def report(tmp_path: Path, host: list[Finding], *forwards: tuple[Forward, list[Finding]]) -> doctor.Report:
    found = Survey(Paths(root=str(tmp_path)))
    record = Record(UUID, "web1", "iptables", "live", [f for f, _ in forwards])
    view = DomainView(found, UUID, "web1", record, None, None)
    live = Finding("record.live", OK, "web1", "live (iptables): 2 forwards")
    return doctor.Report(
        host, [doctor.DomainReport(view, [live], [doctor.ForwardReport(f, found) for f, found in forwards])]
    )


def test_text_is_top_down_with_evidence_and_fix_below_what_fails(tmp_path: Path) -> None:
    host = [
        Finding("hook.installed", OK, "host", "the qemu hook is installed", "not printed"),
        Finding("daemon.running", WARN, "host", "no libvirt daemon runs here", "no process", "systemctl start x"),
    ]
    good = [Finding("lease.current", OK, "web1 tcp", "192.168.122.178 is its current lease", "a lease line")]
    bad = [
        Finding("lease.current", OK, "web1 tcp", "192.168.122.178 is its current lease"),
        Finding("guest.answers", FAIL, "web1 tcp", "refuses", "a connection: refused", "# inside web1:\nstart it"),
    ]
    text = doctor.render_text(report(tmp_path, host, (forward(), good), (forward(start=2080, end=2089), bad)))
    assert text == (
        "host\n"
        "  ok    hook.installed  the qemu hook is installed\n"
        "  warn  daemon.running  no libvirt daemon runs here\n"
        "          evidence  no process\n"
        "          fix       systemctl start x\n"
        f"domain web1 ({UUID})\n"
        "  ok    record.live     live (iptables): 2 forwards\n"
        "  forward tcp 203.0.113.10:20443 -> 192.168.122.178:443\n"
        "    ok    lease.current   192.168.122.178 is its current lease\n"
        "  forward tcp 203.0.113.10:2080-2089 -> 192.168.122.178:443-452\n"
        "    ok    lease.current   192.168.122.178 is its current lease\n"
        "    FAIL  guest.answers   refuses\n"
        "            evidence  a connection: refused\n"
        "            fix       # inside web1:\n"
        "                      start it\n"
        "2 forwards: 1 fine, 1 not; failing: guest.answers\n"
    )


def test_a_failing_host_finding_makes_every_forward_not_fine(tmp_path: Path) -> None:
    host = [Finding("sysctl.ip_forward", FAIL, "host", "off", "0", "sysctl -w net.ipv4.ip_forward=1")]
    built = report(tmp_path, host, (forward(), []))
    assert not built.ok and built.counts() == (1, 0)
    assert doctor.render_text(built).endswith("1 forward: 0 fine, 1 not; failing: sysctl.ip_forward\n")


def test_json_keys(tmp_path: Path) -> None:
    host = [Finding("hook.installed", OK, "host", "installed")]
    bad = [Finding("lease.missing", FAIL, "web1 tcp", "no lease", "no entry", "libvirt-portfwd apply web1")]
    document = json.loads(doctor.render_json(report(tmp_path, host, (forward(None), bad))))
    assert set(document) == {"version", "ok", "host", "domains", "summary"}
    assert (document["version"], document["ok"]) == (1, False)
    assert document["host"] == [host[0].as_json()]
    [domain] = document["domains"]
    assert set(domain) == {"name", "uuid", "status", "pending", "ok", "findings", "forwards"}
    assert (domain["name"], domain["uuid"], domain["status"], domain["pending"], domain["ok"]) == (
        "web1",
        UUID,
        "live",
        None,
        False,
    )
    [fw] = domain["forwards"]
    assert fw == {
        "forward": "tcp 203.0.113.10:20443 -> (no address yet):443",
        "proto": "tcp",
        "address": "203.0.113.10",
        "dev": None,
        "sources": [],
        "start": 20443,
        "end": 20443,
        "guest_port": 443,
        "mac": MAC,
        "bridge": "virbr0",
        "guest": None,
        "where": "metadata",
        "ok": False,
        "findings": [bad[0].as_json()],
    }
    assert document["summary"] == {"forwards": 1, "fine": 0, "not": 1, "failing": ["lease.missing"]}


def test_describe_names_dev_and_sources() -> None:
    fw = Forward("udp", None, "eth1", (IPv4Network("198.51.100.0/24"),), 5353, 5353, 5353, MAC, "virbr0", G1, "x")
    assert doctor.describe(fw) == "udp *:5353 -> 192.168.122.178:5353 (dev eth1; from 198.51.100.0/24)"


# -- a forward's address and a domain's record, on real files -----------------------------------


def lab_root(tmp_path: Path, *, reservation: str | None = None, config: str = "", leases: str | None = None) -> Survey:
    paths = Paths(root=str(tmp_path))
    network = Path(paths.network_dir) / "default.xml"
    network.parent.mkdir(parents=True, exist_ok=True)
    network.write_text(
        network_status(libvirt_firewall="iptables", reservations={MAC: reservation} if reservation else {})
    )
    if config:
        Path(paths.config).parent.mkdir(parents=True, exist_ok=True)
        Path(paths.config).write_text(config)
    if leases is not None:
        path = Path(lease_path(paths.dnsmasq_dir, "virbr0"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(leases)
    return Survey(paths, now=NOW)


def lease_findings(found: Survey, fw: Forward) -> list[Finding]:
    record = Record(UUID, "web1", "iptables", "live", [fw])
    return domainchecks.check_lease(ForwardView(DomainView(found, UUID, "web1", record, None, None), fw))


def test_a_reservation_an_explicit_address_and_a_moved_lease(tmp_path: Path) -> None:
    [reserved] = lease_findings(lab_root(tmp_path / "a", reservation=str(G1)), forward(G1))
    assert (reserved.id, reserved.severity) == ("lease.reserved", OK)
    assert reserved.evidence == f"network default's live status: <host mac='{MAC}' ip='{G1}'/>"
    [moved] = lease_findings(lab_root(tmp_path / "b", reservation=str(G2)), forward(G1))
    assert (moved.id, moved.severity) == ("lease.moved", FAIL)
    assert moved.fix.splitlines()[-1] == "libvirt-portfwd apply web1"

    config = f"domains:\n  web1:\n    - {{guest-address: {G2}, ranges: [{{start: 20443, to: 443}}]}}\n"
    found = lab_root(tmp_path / "c", reservation=str(G1), config=config)
    assert isinstance(found.config, Config)
    where = found.config.specs_for("web1", UUID)[0].where
    [explicit] = lease_findings(found, replace(forward(G2), where=where))  # guest-address comes first
    assert (explicit.id, explicit.severity, explicit.evidence) == ("lease.explicit", OK, where)

    lease = json.dumps([{"ip-address": str(G2), "mac-address": MAC, "expiry-time": NOW + 60}])
    [moved] = lease_findings(lab_root(tmp_path / "d", leases=lease), forward(G1))
    assert (moved.id, moved.summary) == ("lease.moved", f"{MAC}'s lease is {G2}, but the rules send to {G1}")
    assert f'"expiry-time": {NOW + 60}}} (expires ' in moved.evidence and ", in 60 s)" in moved.evidence
    [broken] = lease_findings(lab_root(tmp_path / "e", leases="{"), forward(G1))
    assert (broken.id, broken.severity) == ("lease.unreadable", FAIL)
    assert broken.evidence.startswith("libvirt-portfwd: invalid lease file (")


def test_a_pending_intent(tmp_path: Path) -> None:
    paths = Paths(root=str(tmp_path))
    state.write_intent(paths, UUID, state.APPLY, "web1", b"<domain/>")
    found = survey(paths, now=time.time() + 30)
    [view] = found.domains()
    assert domainchecks.check_record(view) == []  # the pending apply says it
    [pending] = domainchecks.check_intent(view)
    assert (pending.id, pending.severity, pending.subject) == ("record.pending", FAIL, "web1")
    assert pending.summary == "a pending apply, asked 30 s ago, is not carried out yet: nothing of it is live"
    assert pending.fix.splitlines()[-1] == "libvirt-portfwd sync"
    state.write_intent(paths, UUID, state.REMOVE, "web1")
    [pending] = domainchecks.check_intent(survey(paths).domains()[0])
    assert (pending.severity, pending.summary.split(",")[0]) == (WARN, "a pending removal")
