"""libvirt-portfwd end to end on stock hosts: install.sh, a real libvirtd, real guests, real traffic.

Each scenario runs on each stock host of conftest.HOSTS: a Debian 12 and a Debian 13 root
booted with systemd as PID 1 (tests/lab/box.py), libvirt-portfwd installed by its install.sh
as an admin runs it, libvirtd, our watcher and boot sync started by systemd; on Debian 13
under both of libvirt's firewall backends, with our ``backend: auto`` following it. The client
namespace (203.0.113.2) plays the internet and reaches the host's uplink address 203.0.113.1;
the guests serve HTTP on 80 and 443 and UDP echo on 5353 and 5354. Forwards are declared the
ways a user declares them: ``virsh metadata ... --set`` as the README says, or the YAML
config. One long-lived guest, web1, serves the scenarios that only need a running VM with the
guide's forwards; every other VM and every config change is undone by the test that made it.
Timings are printed (``-s`` or ``-rA``) and summed up at the end of the run ("e2e lab
timings"). The reboot and the upgrade have hosts of their own (test_reboot.py, test_upgrade.py).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.portfwd_lab import (
    METADATA_URI,
    PortfwdLab,
    port_forward,
    portfwd_metadata,
    random_mac,
    write_config,
)
from tests.e2e.ruleset import dnat_targets, duplicates, uuids
from tests.e2e.scenario import (
    FORWARD_TIMEOUT,
    GONE_TIMEOUT,
    HOST,
    LEASE_TIMEOUT,
    http,
    note,
    rules_of,
    start,
    status_rows,
    udp,
    wait_http,
    wait_udp,
    wait_until,
)
from tests.installed import CONFIG, RUN_DIR
from tests.lab.guest import mac_for
from tests.lab.host import Guest, ProbeResult
from tests.lab.proc import CommandError, LabError

pytestmark = pytest.mark.e2e

BACK_WITHIN = 2.0  # the bound for forwards to work again after others rebuilt the firewall
HOLD = 2.0  # ...and they must keep working for this long afterwards
# The guide's case (README "After"), plus UDP on every local address.
WEB1_METADATA = portfwd_metadata(
    port_forward("tcp", [(20443, 443), (2080, 80)], address=HOST),
    port_forward("udp", [(5353, None)]),
)


# --- helpers --------------------------------------------------------------------------------------


def wait_web1(lab: PortfwdLab, web1: Guest, timeout: float = FORWARD_TIMEOUT) -> float:
    """All three of web1's forwards answer; the seconds until the first did."""
    first = wait_http(lab, 2080, web1, 80, timeout)
    wait_http(lab, 20443, web1, 443, timeout)
    wait_udp(lab, 5353, web1, 5353, timeout)
    return first


def back_within(lab: PortfwdLab, guest: Guest, began: float, what: str) -> float:
    """web1's TCP forward answers within BACK_WITHIN s of `began` and keeps answering for HOLD s
    more (a late reload of libvirt's rules would break it again); the seconds until it answered."""
    expected = guest.http_body(80).encode()
    first = None
    while (now := time.monotonic()) < began + BACK_WITHIN + HOLD:
        result = http(lab, 2080, timeout=0.5)
        if result.answer == expected:
            first = now - began if first is None else first
        elif now > began + BACK_WITHIN:
            state = f"answered after {first:.2f} s, then stopped" if first is not None else "never answered"
            raise AssertionError(f"{what}: tcp 2080 {state} (at {now - began:.2f} s: {result.error})")
        time.sleep(0.05)
    assert first is not None
    return first


def watcher_rebuilds(lab: PortfwdLab) -> int:
    return lab.watcher_output().count("rules rebuilt")


def assert_silent(lab: PortfwdLab, what: str, *probes: Callable[[], ProbeResult]) -> None:
    for probe in probes:
        result = probe()
        assert not result.ok, f"{what}: a forwarded port still answers: {result.answer!r}"


def assert_one_accept_on_top(lab: PortfwdLab, lines: list[str]) -> None:
    problems = lab.ours_on_top(lines)
    assert not problems, problems


# --- fixtures -------------------------------------------------------------------------------------


class Vms:
    """The VMs a test defines; destroyed and undefined when it ends."""

    def __init__(self, lab: PortfwdLab) -> None:
        self.lab = lab
        self.names: list[str] = []

    def define(
        self, name: str, *, macs: Iterable[str] = (), metadata: str | None = None, extra_cmdline: str = ""
    ) -> Guest:
        self.names.append(name)
        return self.lab.define_guest(name, macs=macs, metadata=metadata, extra_cmdline=extra_cmdline)


class Config:
    """The installed config file; the original content is put back when the test ends."""

    def __init__(self, lab: PortfwdLab) -> None:
        self.lab = lab
        self.original = lab.path(CONFIG).read_text()

    def write(self, text: str) -> None:
        write_config(self.lab, text)

    def restore(self) -> None:
        write_config(self.lab, self.original)


@pytest.fixture
def vms(portfwd_lab: PortfwdLab) -> Iterator[Vms]:
    created = Vms(portfwd_lab)
    yield created
    errors = []
    for name in reversed(created.names):
        try:
            portfwd_lab.undefine(name)
        except LabError as exc:
            errors.append(str(exc))
    assert not errors, errors


@pytest.fixture
def config(portfwd_lab: PortfwdLab) -> Iterator[Config]:
    file = Config(portfwd_lab)
    yield file
    file.restore()


@pytest.fixture(scope="module")
def web1(portfwd_lab: PortfwdLab) -> Iterator[Guest]:
    """web1, defined (not started) with the guide's forwards set by virsh metadata."""
    guest = portfwd_lab.define_guest("web1", metadata=WEB1_METADATA)
    stored = portfwd_lab.virsh("metadata", "web1", "--uri", METADATA_URI).stdout
    assert 'start="20443"' in stored, stored
    yield guest
    portfwd_lab.undefine("web1")


@pytest.fixture
def web1_up(portfwd_lab: PortfwdLab, web1: Guest) -> Guest:
    """web1 running with its forwards answering: started if an earlier test left it off,
    restarted (its hook applies the forwards again) if an earlier failure left them broken."""
    lab = portfwd_lab
    if lab.domain_state("web1") == "running":
        try:
            wait_web1(lab, web1, timeout=5.0)
            return web1
        except AssertionError as exc:
            print(f"web1 runs but its forwards do not answer ({exc}); restarting it")
            lab.destroy("web1")
    start(lab, web1)
    wait_web1(lab, web1, LEASE_TIMEOUT)
    return web1


@pytest.fixture(autouse=True)
def rules_follow_running_vms(portfwd_lab: PortfwdLab) -> Iterator[None]:
    """After every scenario: no duplicate rule, and no rule of a VM that is not running."""
    yield
    ours = portfwd_lab.our_rules()
    assert not duplicates(ours), f"duplicate rules: {duplicates(ours)}"
    stale = uuids(ours) - portfwd_lab.running_uuids()
    assert not stale, f"rules of domains that are not running: {sorted(stale)}"


# --- scenarios ------------------------------------------------------------------------------------


def test_guide_case_virsh_start_forwards_tcp_and_udp(portfwd_lab: PortfwdLab, web1: Guest) -> None:
    """1. virsh start, and the client reaches web1 on 2080->80, 20443->443 and udp 5353, no manual command."""
    lab = portfwd_lab
    if lab.domain_state("web1") != "shut off":
        lab.destroy("web1")
    had_lease = any(lease.get("mac-address") == web1.macs[0] for lease in lab.read_leases())

    began = time.monotonic()
    virsh_start = lab.start_domain("web1")
    recorded = {row.state for row in lab.status() if row.domain == "web1"}
    web1.address = lab.wait_for_lease(web1.macs[0], LEASE_TIMEOUT, domain="web1")
    leased = time.monotonic()
    wait_http(lab, 2080, web1, 80)
    forwarded = time.monotonic()
    wait_http(lab, 20443, web1, 443)
    wait_udp(lab, 5353, web1, 5353)

    note(lab, "s1 web1 virsh start", virsh_start, f"recorded right after: {', '.join(sorted(recorded))}")
    note(lab, "s1 web1 start -> lease", leased - began, "an earlier lease was known" if had_lease else "new lease")
    note(lab, "s1 web1 lease -> forward answers", forwarded - leased, "includes the guest's own readiness")
    assert recorded in ({"live"}, {"waiting"}), recorded
    said = lab.portfwd("status").stdout.splitlines()[0]
    assert said == f"backend: {lab.backend} (auto: libvirt runs network default with its {lab.backend} firewall)"
    rows = status_rows(lab, "web1")
    assert rows == [
        (f"tcp {HOST}:20443", f"{web1.address}:443", "live", "yes"),
        (f"tcp {HOST}:2080", f"{web1.address}:80", "live", "yes"),
        ("udp *:5353", f"{web1.address}:5353", "live", "yes"),
    ], rows
    # Nothing else is opened: the guest's address directly, and an unforwarded guest port.
    direct = lab.http_probe(lab.client_ns, web1.address, 80, timeout=3.0)
    assert not direct.ok and "refused" in direct.error, direct
    assert_silent(lab, "unforwarded port", lambda: udp(lab, 5354), lambda: http(lab, 80))
    assert_one_accept_on_top(lab, lab.ruleset())
    # The host itself reaches its public address and port (nat OUTPUT / our output chain).
    from_host = lab.http_probe(lab.host_ns, lab.host_addr, 2080, timeout=3.0)
    assert from_host.answer == web1.http_body(80).encode(), from_host


def test_sync_restores_rules_an_admin_flushed(portfwd_lab: PortfwdLab, web1_up: Guest) -> None:
    """9. libvirt-portfwd sync after our chains were flushed (and, second, deleted) by hand, with
    the watcher stopped; then, with the watcher running, a flush is repaired with no command."""
    lab = portfwd_lab
    before = sorted(lab.our_rules())

    lab.stop_watcher()
    try:
        lab.flush_our_chains()
        assert_silent(lab, "after the flush", lambda: http(lab, 2080), lambda: udp(lab, 5353))
        assert {row[3] for row in status_rows(lab, "web1")} == {"NO"}, "status should show LIVE NO after a flush"
        began = time.monotonic()
        lab.portfwd("sync")
        note(lab, "s9 sync after flush", time.monotonic() - began)
        note(lab, "s9 sync -> forward answers", wait_web1(lab, web1_up))
        assert sorted(lab.our_rules()) == before
        assert {row[3] for row in status_rows(lab, "web1")} == {"yes"}

        lab.delete_our_rules()
        assert lab.our_rules() == []
        assert_silent(lab, "after deleting our chains", lambda: http(lab, 2080))
        began = time.monotonic()
        lab.portfwd("sync")
        note(lab, "s9 sync after chains deleted", time.monotonic() - began)
        wait_web1(lab, web1_up)
        after = lab.ruleset()
        assert sorted(lab.our_rules(after)) == before
        assert_one_accept_on_top(lab, after)
    finally:
        lab.start_watcher()

    rebuilds = watcher_rebuilds(lab)
    began = time.monotonic()
    lab.flush_our_chains()
    note(lab, "s9 flush -> forward answers (watcher)", back_within(lab, web1_up, began, "after a flush"))
    assert watcher_rebuilds(lab) > rebuilds
    assert sorted(lab.our_rules()) == before


def test_libvirtd_restart_reconnects(portfwd_lab: PortfwdLab, web1_up: Guest) -> None:
    """3. libvirtd restarted while web1 runs (the reconnect hook): still reachable, no duplicate rules."""
    lab = portfwd_lab
    before = sorted(lab.our_rules())
    libvirt_before = sorted(lab.libvirt_rules())
    mark = len(lab.hook_runs())

    note(lab, "s3 libvirtd restart", lab.restart_libvirtd())
    answering = time.monotonic()
    note(lab, "s3 restart -> forward answers", back_within(lab, web1_up, answering, "after libvirtd restart"))
    reconnect = lab.wait_for_hook("web1", "reconnect", after=mark)
    assert reconnect.status == 0, reconnect
    print(f"s3 reconnect hook stderr: {reconnect.stderr.strip()!r}")
    assert lab.domain_state("web1") == "running"
    wait_web1(lab, web1_up, BACK_WITHIN)

    after = lab.ruleset()
    assert not duplicates(lab.our_rules(after))
    assert sorted(lab.our_rules(after)) == before
    assert sorted(lab.libvirt_rules(after)) == libvirt_before
    assert_one_accept_on_top(lab, after)
    assert {row[3] for row in status_rows(lab, "web1")} == {"yes"}


def test_libvirtd_sighup_keeps_forwards(portfwd_lab: PortfwdLab, web1_up: Guest) -> None:
    """4. SIGHUP to libvirtd (it reloads its firewall rules, no hook runs after) while web1 runs:
    reachable again within 2 s of the signal (nftables: the watcher puts our gate back on top)."""
    lab = portfwd_lab
    before = sorted(lab.our_rules())
    libvirt_before = lab.libvirt_handles()
    began = time.monotonic()
    lab.sighup_libvirtd(settle=0.0)
    note(lab, "s4 libvirtd SIGHUP (until it answers)", time.monotonic() - began)
    note(lab, "s4 SIGHUP -> forward answers", back_within(lab, web1_up, began, "after libvirtd SIGHUP"))
    wait_web1(lab, web1_up, BACK_WITHIN)
    after = lab.ruleset()
    assert sorted(lab.our_rules(after)) == before
    assert_one_accept_on_top(lab, after)
    if lab.backend == "nftables":
        assert lab.libvirt_handles() != libvirt_before, "libvirt did not reload its rules on SIGHUP"


def test_firewall_reload_puts_libvirts_rules_on_top(portfwd_lab: PortfwdLab, web1_up: Guest) -> None:
    """11. A firewalld-style reload: libvirt's rules deleted and inserted again above ours, no hook
    fires. The watcher puts ours back on top: reachable again within 2 s."""
    lab = portfwd_lab
    before = sorted(lab.our_rules())
    libvirt_before = sorted(lab.libvirt_rules())
    rebuilds = watcher_rebuilds(lab)
    began = time.monotonic()
    lab.reload_libvirt_rules()
    try:
        note(lab, "s11 reload -> forward answers (watcher)", back_within(lab, web1_up, began, "after the reload"))
        wait_web1(lab, web1_up, BACK_WITHIN)
        after = lab.ruleset()
        assert sorted(lab.our_rules(after)) == before
        assert sorted(lab.libvirt_rules(after)) == libvirt_before
        assert_one_accept_on_top(lab, after)
        assert watcher_rebuilds(lab) > rebuilds, "the watcher did not rebuild: was our accept ever below libvirt's?"
    finally:
        lab.return_rules_to_libvirt()
    wait_until(lambda: sorted(lab.libvirt_rules()) == libvirt_before, 10.0, "libvirt's own rules back")
    back_within(lab, web1_up, time.monotonic(), "after libvirt took its rules back")


def test_second_vm_claiming_a_held_port(portfwd_lab: PortfwdLab, web1_up: Guest, vms: Vms, config: Config) -> None:
    """7. web2 declares host port 2080, which web1 holds: an error in the log, web1 keeps it;
    with on_error: block, virsh start web2 fails with that error."""
    lab = portfwd_lab
    web2 = vms.define("web2", metadata=portfwd_metadata(port_forward("tcp", [(2080, 80)], address=HOST)))

    mark = len(lab.hook_runs())
    note(lab, "s7 web2 virsh start (on_error: allow)", lab.start_domain("web2"))
    assert lab.domain_state("web2") == "running"
    started = lab.wait_for_hook("web2", "started", after=mark)
    print(f"s7 web2 started hook: exit {started.status}, stderr {started.stderr.strip()!r}")
    assert started.status == 0
    assert "libvirt-portfwd: web2: host port conflict" in started.stderr
    assert f"tcp {HOST}:2080 is already forwarded to domain web1" in started.stderr
    assert status_rows(lab, "web2") == []
    assert rules_of(lab, web2.uuid) == []
    lab.wait_for_guest(web2, LEASE_TIMEOUT)  # web2 is up and serving: the forward still goes to web1
    assert http(lab, 2080).answer == web1_up.http_body(80).encode()
    assert {row[3] for row in status_rows(lab, "web1")} == {"yes"}

    lab.destroy("web2")
    config.write("on_error: block\n")
    with pytest.raises(CommandError) as refused:
        lab.virsh("start", "web2")
    message = refused.value.stderr
    print(f"s7 virsh start web2 (on_error: block): {message.strip()}")
    assert "host port conflict" in message
    assert f"tcp {HOST}:2080 is already forwarded to domain web1" in message
    assert lab.domain_state("web2") == "shut off"
    assert status_rows(lab, "web2") == []
    wait_web1(lab, web1_up)


def test_network_recreated_then_vm_restarted(portfwd_lab: PortfwdLab, web1_up: Guest) -> None:
    """5. net-destroy + net-start default while web1 runs, then web1 destroyed and started:
    reachable again, no stale or duplicate rules, libvirt's rules as before."""
    lab = portfwd_lab
    old_address = web1_up.address
    before = sorted(lab.our_rules())
    libvirt_before = sorted(lab.libvirt_rules())

    began = time.monotonic()
    lab.restart_network()
    note(lab, "s5 net-destroy + net-start", time.monotonic() - began)
    unplugged = http(lab, 2080)
    print(f"s5 web1 before its restart (libvirt does not re-plug it): {unplugged.answer or unplugged.error!r}")
    assert not duplicates(lab.our_rules())

    note(lab, "s5 web1 virsh destroy", lab.destroy("web1"))
    wait_until(lambda: rules_of(lab, web1_up.uuid) == [], GONE_TIMEOUT, "web1's rules to go")
    virsh_start, lease = start(lab, web1_up)
    note(lab, "s5 web1 virsh start", virsh_start)
    note(lab, "s5 web1 lease -> forward answers", wait_web1(lab, web1_up), f"start -> lease {lease:.2f} s")

    after = lab.ruleset()
    ours = lab.our_rules(after)
    assert not duplicates(ours)
    moved = re.compile(rf"(?<![\d.]){re.escape(old_address or '')}(?![\d])")  # same MAC: same address, normally
    assert sorted(moved.sub(web1_up.address or "", line) for line in before) == sorted(ours)
    assert dnat_targets(ours) == sorted(f"{web1_up.address}:{port}" for port in (80, 443, 5353))
    assert sorted(lab.libvirt_rules(after)) == libvirt_before
    assert_one_accept_on_top(lab, after)


def test_shutdown_and_destroy_remove_every_rule(portfwd_lab: PortfwdLab, web1_up: Guest) -> None:
    """2. virsh shutdown, then virsh destroy: the ports stop answering, none of our rules
    remain, libvirt's rules are untouched."""
    lab = portfwd_lab
    others = [row for row in lab.status() if row.domain != "web1"]
    assert not others, f"precondition: web1 is the only VM with forwards, but: {others}"
    for how in ("shutdown", "destroy"):
        if lab.domain_state("web1") != "running":
            start(lab, web1_up)
            wait_web1(lab, web1_up, LEASE_TIMEOUT)
        lines = lab.ruleset()
        libvirt_before = sorted(lab.libvirt_rules(lines))
        assert lab.our_rules(lines)

        stop = lab.shutdown if how == "shutdown" else lab.destroy
        note(lab, f"s2 virsh {how} -> shut off", stop("web1"))
        gone = wait_until(lambda: lab.our_rules() == [], GONE_TIMEOUT, f"our rules to go after {how}")
        note(lab, f"s2 shut off -> rules gone ({how})", gone)
        assert_silent(lab, how, lambda: http(lab, 2080), lambda: http(lab, 20443), lambda: udp(lab, 5353))
        text = lab.run_in_host(["iptables-save"]).stdout + lab.run_in_host(["nft", "list", "ruleset"]).stdout
        assert not re.search("PORTFWD|libvirt-portfwd|libvirt_portfwd", text), text
        assert sorted(lab.libvirt_rules()) == libvirt_before
        assert lab.status() == []
        assert not any(lab.path(RUN_DIR / "domains").glob("*.json"))


def test_fresh_vm_gets_its_forward_when_the_lease_appears(portfwd_lab: PortfwdLab, vms: Vms) -> None:
    """6. A new MAC, no reservation, no earlier lease: reachable once its lease appears, and
    virsh start does not wait for it."""
    lab = portfwd_lab
    known = {str(lease.get("mac-address", "")) for lease in lab.read_leases()}
    fresh_mac = random_mac(known)
    plain_mac = random_mac(known | {fresh_mac})
    network = lab.network_status().read_text()
    assert "<host " not in network, "precondition: no static DHCP reservation in the network"
    plain = vms.define("plain", macs=[plain_mac])
    fresh = vms.define(
        "fresh",
        macs=[fresh_mac],
        metadata=portfwd_metadata(port_forward("tcp", [(6080, 80)]), port_forward("udp", [(6353, 5353)])),
    )

    plain_start = lab.start_domain(plain.name)
    began = time.monotonic()
    fresh_start = lab.start_domain(fresh.name)
    recorded = {row.state for row in lab.status() if row.domain == "fresh"}
    lab.destroy(plain.name)  # only its virsh start time was wanted
    fresh.address = lab.wait_for_lease(fresh_mac, LEASE_TIMEOUT, domain="fresh")
    leased = time.monotonic()
    wait_http(lab, 6080, fresh, 80)
    forwarded = time.monotonic()
    wait_udp(lab, 6353, fresh, 5353)

    note(lab, "s6 virsh start, VM without forwards", plain_start)
    note(lab, "s6 virsh start, fresh VM with forwards", fresh_start, f"recorded right after: {sorted(recorded)}")
    note(lab, "s6 fresh start -> lease", leased - began)
    note(lab, "s6 fresh lease -> forward answers", forwarded - leased, "includes the guest's own readiness")
    assert recorded == {"waiting"}, recorded
    assert fresh_start < 5.0, f"virsh start took {fresh_start:.1f} s: did it wait for the lease?"
    assert status_rows(lab, "fresh") == [
        ("tcp *:6080", f"{fresh.address}:80", "live", "yes"),
        ("udp *:6353", f"{fresh.address}:5353", "live", "yes"),
    ]
    waiters = wait_until(lambda: not waiter_pids(lab), 10.0, "the lease waiter to exit")
    print(f"s6 the lease waiter exited {waiters:.2f} s after the forward answered")


def waiter_pids(lab: PortfwdLab) -> list[int]:
    found = []
    for pid in lab.pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"libvirt_portfwd.waiter" in cmdline:
            found.append(int(pid))
    return found


def test_two_vms_started_at_once(portfwd_lab: PortfwdLab, vms: Vms) -> None:
    """8. Two VMs started at the same moment: both reachable; stopped at once: both gone."""
    lab = portfwd_lab
    pair = [
        vms.define(
            f"pair-{i}",
            metadata=portfwd_metadata(
                port_forward("tcp", [(3080 + i, 80)]), port_forward("udp", [(3353 + i, 5353)], address=HOST)
            ),
        )
        for i in range(2)
    ]
    began = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        starts = list(pool.map(lab.start_domain, [guest.name for guest in pair]))
    for i, guest in enumerate(pair):
        guest.address = lab.wait_for_lease(guest.macs[0], LEASE_TIMEOUT, domain=guest.name)
        wait_http(lab, 3080 + i, guest, 80, LEASE_TIMEOUT)
        wait_udp(lab, 3353 + i, guest, 5353)
    note(lab, "s8 both virsh start (parallel)", max(starts), ", ".join(f"{s:.2f} s" for s in starts))
    note(lab, "s8 start -> both forwards answer", time.monotonic() - began)

    lines = lab.ruleset()
    ours = lab.our_rules(lines)
    assert not duplicates(ours)
    for i, guest in enumerate(pair):
        assert dnat_targets(rules_of(lab, guest.uuid)) == [f"{guest.address}:5353", f"{guest.address}:80"]
        assert (f"tcp *:{3080 + i}", f"{guest.address}:80", "live", "yes") in status_rows(lab, guest.name)
    assert_one_accept_on_top(lab, lines)

    with ThreadPoolExecutor(2) as pool:
        stops = list(pool.map(lab.destroy, [guest.name for guest in pair]))
    note(lab, "s8 both virsh destroy (parallel)", max(stops))
    pair_uuids = {guest.uuid for guest in pair}
    wait_until(lambda: not uuids(lab.our_rules()) & pair_uuids, GONE_TIMEOUT, "both VMs' rules to go")
    for guest in pair:
        assert status_rows(lab, guest.name) == []
    assert_silent(lab, "after destroy", lambda: http(lab, 3080), lambda: http(lab, 3081))


def test_config_forward_to_the_second_nic(portfwd_lab: PortfwdLab, vms: Vms, config: Config) -> None:
    """10. Forwards declared only in the YAML config, for a VM with two NICs: `mac` names the
    second NIC; a forward without `mac` goes to the first."""
    lab = portfwd_lab
    macs = (mac_for("dual", 0), mac_for("dual", 1))
    config.write(
        "domains:\n"
        "  dual:\n"
        f"    - {{proto: tcp, mac: '{macs[1]}', ranges: [{{start: 4080, to: 80}}]}}\n"
        f"    - {{proto: udp, mac: '{macs[1]}', address: {HOST}, ranges: [{{start: 4353, to: 5354}}]}}\n"
        "    - {proto: tcp, ranges: [{start: 4443, to: 443}]}\n"
    )
    dual = vms.define("dual", macs=macs)
    stored = lab.virsh("metadata", "dual", "--uri", METADATA_URI, check=False).stdout
    assert "portForward" not in stored, "precondition: no metadata, only the config"

    began = time.monotonic()
    lab.start_domain("dual")
    first = lab.wait_for_lease(macs[0], LEASE_TIMEOUT, domain="dual")
    second = lab.wait_for_lease(macs[1], LEASE_TIMEOUT, domain="dual")
    assert first != second
    wait_http(lab, 4080, dual, 80, LEASE_TIMEOUT)
    wait_http(lab, 4443, dual, 443)
    wait_udp(lab, 4353, dual, 5354)
    note(lab, "s10 dual start -> config forwards answer", time.monotonic() - began)

    assert dnat_targets(rules_of(lab, dual.uuid)) == sorted([f"{second}:80", f"{second}:5354", f"{first}:443"])
    assert status_rows(lab, "dual") == sorted(
        [
            ("tcp *:4080", f"{second}:80", "live", "yes"),
            (f"udp {HOST}:4353", f"{second}:5354", "live", "yes"),
            ("tcp *:4443", f"{first}:443", "live", "yes"),
        ]
    )
    lab.destroy("dual")
    wait_until(lambda: rules_of(lab, dual.uuid) == [], GONE_TIMEOUT, "dual's rules to go")


def test_changes_are_in_the_journal(portfwd_lab: PortfwdLab, web1_up: Guest) -> None:
    """12. What changed is in the host's journal under our identifier (``journalctl -t
    libvirt-portfwd``), as journald got it from the hook's syslog line: a stop removes web1's
    forwards, a start makes each live, a libvirtd restart's reconnect says what it found; the
    watcher's unit started with the host and says so too."""
    lab = portfwd_lab
    seen = lab.journal_cursor()
    lab.destroy("web1")
    wait_until(lambda: rules_of(lab, web1_up.uuid) == [], GONE_TIMEOUT, "web1's rules to go")
    start(lab, web1_up)
    wait_web1(lab, web1_up, LEASE_TIMEOUT)
    lab.restart_libvirtd()
    # the reconnect's change, said by the hook, or by the watcher (restarted with libvirtd) if it held the lock first
    reconnected = ("web1: reconnect: ", "web1: a pending change was completed: live: ")
    wait_until(
        lambda: any(line.startswith(reconnected) for line in lab.our_journal(after=seen)), 10.0, "the reconnect line"
    )
    lines = lab.our_journal(after=seen)
    print("s12 journal:\n" + "\n".join(lines))
    assert any(line.startswith("web1: forwards removed (3 recorded)") for line in lines), lines
    for claim, target in ((f"tcp {HOST}:2080", "80"), (f"tcp {HOST}:20443", "443"), ("udp *:5353", "5353")):
        live = f"web1: forward {claim} -> {web1_up.address}:{target} live ({lab.backend})"
        assert live in lines, (live, lines)
    assert any(line.startswith("web1: started: ") for line in lines), lines
    assert any(line.startswith(reconnected) for line in lines), lines
    assert "service started" in lab.our_journal("-b")
    assert lab.unit_state("libvirt-portfwd.service")["ActiveState"] == "active"


def test_the_forward_follows_the_guest_when_its_reservation_changes(portfwd_lab: PortfwdLab, vms: Vms) -> None:
    """13. A reservation for the running guest's MAC added with ``virsh net-update`` (another
    address than its lease); the guest renews (every 3 s here: portfwd.renew), dnsmasq refuses its
    old address and gives it the reserved one: within 2 s of the new lease the watcher re-points
    the forward, which reaches the same guest at its new address."""
    lab = portfwd_lab
    mover = vms.define(
        "mover",
        metadata=portfwd_metadata(port_forward("tcp", [(5080, 80)]), port_forward("udp", [(5355, 5353)])),
        extra_cmdline="portfwd.renew=3",
    )
    start(lab, mover)
    wait_http(lab, 5080, mover, 80, LEASE_TIMEOUT)
    old = mover.address
    taken = {str(lease.get("ip-address")) for lease in lab.read_leases()}  # dnsmasq keeps a leased address
    reserved = next(f"192.168.122.{n}" for n in range(150, 250) if f"192.168.122.{n}" not in taken)
    host = f"<host mac='{mover.macs[0]}' name='mover' ip='{reserved}'/>"
    lab.virsh("net-update", lab.network, "add", "ip-dhcp-host", host, "--live")
    try:
        began = time.monotonic()
        wait_until(lambda: leased(lab, mover.macs[0]) == reserved, 60.0, f"the guest to renew on {reserved}")
        renewed = time.monotonic()
        note(lab, "s13 reservation added -> guest renewed on it", renewed - began)
        mover.address = reserved
        wait_http(lab, 5080, mover, 80, timeout=2.0)
        wait_udp(lab, 5355, mover, 5353, timeout=2.0)
        note(lab, "s13 new lease -> forward re-pointed", time.monotonic() - renewed)
        assert status_rows(lab, "mover") == sorted(
            [("tcp *:5080", f"{reserved}:80", "live", "yes"), ("udp *:5355", f"{reserved}:5353", "live", "yes")]
        )
        assert dnat_targets(rules_of(lab, mover.uuid)) == sorted([f"{reserved}:80", f"{reserved}:5353"])
        assert any("mover: its guest address moved: re-pointed" in line for line in lab.our_journal("-b"))
    finally:
        lab.virsh("net-update", lab.network, "delete", "ip-dhcp-host", host, "--live", check=False)
        print(f"s13 {old} -> {reserved}")


def leased(lab: PortfwdLab, mac: str) -> str | None:
    current = [lease for lease in lab.read_leases() if str(lease.get("mac-address", "")).lower() == mac]
    return str(max(current, key=lambda lease: int(lease.get("expiry-time", 0)))["ip-address"]) if current else None


def test_a_pending_removal_is_completed_by_the_watcher_unit(portfwd_lab: PortfwdLab, vms: Vms) -> None:
    """14. Our lock held by something else while a VM is destroyed: its stopped hook gives up
    within its time bound and leaves the removal pending (status says so, the VM is gone all
    the same); once the lock is free, the watcher unit completes it within a second or two."""
    lab = portfwd_lab
    held = vms.define("held", metadata=portfwd_metadata(port_forward("tcp", [(6180, 80)])))
    start(lab, held)
    wait_http(lab, 6180, held, 80, LEASE_TIMEOUT)
    holder = subprocess.Popen(lab.host_argv(["flock", str(RUN_DIR / "lock"), "sleep", "31.5"]))
    try:
        time.sleep(0.5)
        note(lab, "s14 virsh destroy, the lock held (the hook's bound)", lab.destroy("held", timeout=60))
        pending = lab.portfwd("status").stdout
        assert "held" in pending and "pending  removal" in pending, pending
        assert rules_of(lab, held.uuid), "removed although the lock was held"
    finally:
        lab.run_in_host(["pkill", "-f", "sleep 31.5"], check=False)  # inside the box: the lock goes with it
        holder.wait(timeout=10)
    note(lab, "s14 lock free -> removal completed", wait_until(lambda: rules_of(lab, held.uuid) == [], 5.0, "removal"))
    assert "pending" not in lab.portfwd("status").stdout
    assert any(line.startswith("held: a pending change was completed") for line in lab.our_journal("-b"))
