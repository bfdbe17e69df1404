"""``doctor``'s checks of one domain and of each of its forwards: what is recorded for it, the
guest address against libvirt's lease file, and the guest answering the host.

Each check is a function of a DomainView or a ForwardView (survey.py) returning findings;
doctor.py lists them in hop order. Read only, but for one TCP connection per forward from the
host to the guest's address and port (closed at once).
"""

from __future__ import annotations

import os
import shlex
import socket
import time
from ipaddress import IPv4Address

from . import state
from .config import Config
from .findings import FAIL, INFO, OK, WARN, Finding
from .leases import EXPIRY_MARGIN, Lease, current_leases, lease_path
from .network import Networks
from .survey import DomainView, ForwardView, when

GUEST_TIMEOUT = 1.0  # seconds a guest has to accept the host's connection


def check_record(domain: DomainView) -> list[Finding]:
    """Live, waiting for a lease, unreadable, or nothing at all (a domain asked about by name)."""
    paths, name = domain.survey.paths, domain.name
    if domain.error is not None:
        return [
            Finding(
                "record.unreadable",
                FAIL,
                name,
                "its record does not load: its forwards cannot be checked or removed by it",
                str(domain.error),
                "# sync rewrites every record from the running domains:\nlibvirt-portfwd sync",
            )
        ]
    record = domain.record
    if record is None:
        if domain.intent is not None:
            return []  # check_intent says what is pending
        quoted = shlex.quote(name)
        return [
            Finding(
                "record.missing",
                FAIL,
                name,
                f"nothing is recorded for {name}: it has no forward of ours",
                f"no record named {name} or with that UUID in {paths.state_dir}, and no pending intent",
                f"# is it running, and what would its forwards be?\nvirsh dumpxml {quoted} | libvirt-portfwd plan -\n"
                f"# then apply them now:\nlibvirt-portfwd apply {quoted}",
            )
        ]
    where = paths.record(record.uuid)
    if record.status == state.LIVE:
        count = len(record.forwards)
        return [
            Finding(
                "record.live",
                OK,
                name,
                f"live ({record.backend}): {count} forward{'s' if count != 1 else ''}",
                f"{where}: status live, backend {record.backend}",
            )
        ]
    since = _mtime(where)
    config = domain.survey.config
    waiting = (
        f"# a waiter applies them within a second of the lease appearing, for lease_wait ({config.lease_wait:.0f} s);\n"
        if isinstance(config, Config)
        else ""
    )
    return [
        Finding(
            "record.waiting",
            FAIL,
            name,
            f"waiting for a DHCP lease of {', '.join(record.waiting_macs)}: its forwards are not live",
            f"{where}: status waiting" + (f", since {when(since)}" if since else ""),
            f"# the lease checks below say what libvirt's lease file holds;\n{waiting}"
            f"# later, once the guest has a lease:\nlibvirt-portfwd apply {shlex.quote(name)}",
        )
    ]


def check_intent(domain: DomainView) -> list[Finding]:
    """A change a hook asked for that is not carried out yet (state.py's intents)."""
    intent = domain.intent
    if intent is None:
        return []
    removal = intent.get("op") == state.REMOVE
    live = domain.record is not None and domain.record.status == state.LIVE
    age = max(0.0, domain.survey.now - float(intent.get("at") or 0))
    paths = domain.survey.paths
    where = paths.intent(domain.uuid) if os.path.exists(paths.intent(domain.uuid)) else paths.intent(domain.uuid, True)
    return [
        Finding(
            "record.pending",
            WARN if removal or live else FAIL,
            domain.name,
            f"a pending {'removal' if removal else 'apply'}, asked {age:.0f} s ago, is not carried out yet"
            + ("" if removal or live else ": nothing of it is live"),
            f"{where}: op {intent.get('op')}",
            "# the service carries it out within seconds of the cause going away (our lock busy, a firewall\n"
            "# command hanging); the log says which:\njournalctl -t libvirt-portfwd -n 20\n# or now:\n"
            "libvirt-portfwd sync",
        )
    ]


def check_lease(forward: ForwardView) -> list[Finding]:
    """The guest address the rules send to (or wait for) against what libvirt says now: a static
    reservation, the forward's own guest-address, or a current lease of the NIC's MAC."""
    fw, survey, subject = forward.forward, forward.survey, forward.subject
    name = shlex.quote(forward.domain.name)
    if fw.guest is not None and _explicit(forward):  # the order in which plan.py resolves it
        return [Finding("lease.explicit", OK, subject, f"{fw.guest} is the forward's own guest-address", fw.where)]
    reserved, status = _reservation(survey.networks, fw.bridge, fw.mac)
    if reserved is not None:
        if reserved == fw.guest:
            return [Finding("lease.reserved", OK, subject, f"{fw.guest} is {fw.mac}'s static reservation", status)]
        return [_moved(subject, fw.mac, reserved, fw.guest, status, name, "static reservation")]
    path = lease_path(survey.paths.dnsmasq_dir, fw.bridge)
    leases = survey.leases(fw.bridge)
    if not isinstance(leases, list):
        return [
            Finding(
                "lease.unreadable",
                FAIL,
                subject,
                "libvirt's lease file cannot be read: the guest's address cannot be resolved",
                str(leases),
                "# libvirt's DHCP helper rewrites it whole at the next lease or renewal; if it stays broken, no guest\n"
                f"# address on {fw.bridge} can be resolved: see what it holds ({path})",
            )
        ]
    kind, lease = judge_lease(leases, fw.mac, fw.guest, survey.now)
    if kind == "current" and lease is not None:
        summary = (
            f"{lease[1]} is {fw.mac}'s current lease"
            if fw.guest is not None
            else f"a lease is there now ({lease[1]}): the waiter applies it within a second"
        )
        return [Finding("lease.current", OK, subject, summary, _lease_line(path, lease, survey.now))]
    if kind == "moved" and lease is not None:
        return [_moved(subject, fw.mac, lease[1], fw.guest, _lease_line(path, lease, survey.now), name, "lease")]
    explicit = isinstance(survey.config, Config) and survey.config.metadata.guest_address
    if kind == "missing" and fw.guest is not None and explicit and fw.where.startswith("metadata"):
        return [
            Finding(
                "lease.explicit",
                INFO,
                subject,
                f"no lease for {fw.mac}: {fw.guest} presumably is the forward's guest-address (metadata may set it)",
                f"{path}: no entry for {fw.mac}",
            )
        ]
    fix = (
        f"# is {forward.domain.name} up, its DHCP client running? libvirt's view of its address:\n"
        f"virsh domifaddr {name} --source lease\n"
        f"# once it has a lease, apply its forwards:\nlibvirt-portfwd apply {name}"
    )
    sends = f": the rules send to {fw.guest}, which libvirt may give to another guest" if fw.guest else ""
    if kind == "expired" and lease is not None:
        ago = survey.now - lease[2]
        return [
            Finding(
                "lease.expired",
                FAIL,
                subject,
                f"{fw.mac}'s lease expired {ago:.0f} s ago and was not renewed{sends}",
                _lease_line(path, lease, survey.now),
                fix,
            )
        ]
    evidence = f"{path}: no entry for {fw.mac}" if os.path.exists(path) else f"no file {path}"
    return [Finding("lease.missing", FAIL, subject, f"{fw.mac} has no lease{sends}", evidence, fix)]


def judge_lease(leases: list[Lease], mac: str, recorded: IPv4Address | None, now: float) -> tuple[str, Lease | None]:
    """What the lease file says of ``mac`` at ``now``, against the address the rules use
    (``recorded``; None while waiting): ``current`` (the lease a start would use is that
    address, or while waiting there is one), ``moved`` (it is another address), ``expired``
    (only expired entries: the latest of them), ``missing`` (no entry at all)."""
    mine = [lease for lease in leases if lease[0] == mac]
    best = current_leases(mine, now + EXPIRY_MARGIN).get(mac)  # what counts for the forwards (leases.py)
    if best is not None:
        return ("current" if recorded in (None, best[1]) else "moved"), best
    if mine:
        return "expired", max(mine, key=lambda lease: lease[2])
    return "missing", None


def check_guest(forward: ForwardView) -> list[Finding]:
    """A TCP connection from the host to the guest's address and (first) port: does the guest
    answer at all, whatever the firewall does to forwarded packets? UDP and SCTP: not tried."""
    fw, subject = forward.forward, forward.subject
    if fw.guest is None:
        return []
    if fw.proto != "tcp":
        return [Finding("guest.answers", INFO, subject, f"not checked: {fw.proto.upper()} has no handshake to try")]
    target = f"{fw.guest}:{fw.guest_port}"
    which = f" (the first of {fw.end - fw.start + 1} ports)" if fw.end > fw.start else ""
    outcome, took = probe_tcp(str(fw.guest), fw.guest_port, GUEST_TIMEOUT)
    evidence = f"a connection from the host to {target}{which}: {outcome} after {took * 1000:.0f} ms"
    name = forward.domain.name
    if outcome == "accepted":
        return [Finding("guest.answers", OK, subject, f"{target} accepts connections", evidence)]
    if outcome == "refused":
        summary = f"{target} refuses connections: nothing listens there in the guest, or its firewall rejects them"
        fix = (
            f"# inside {name}: start the service; it must listen on port {fw.guest_port} of {fw.guest} or of every\n"
            "# address (ss -ltn shows it), and the guest's own firewall must let it in"
        )
    else:
        summary = f"{target} does not answer: the guest is down or not at that address, or its firewall drops it"
        fix = f"# is {name} at that address? libvirt's view:\nvirsh domifaddr {shlex.quote(name)} --source lease"
    return [Finding("guest.answers", FAIL, subject, summary, evidence, fix)]


def probe_tcp(address: str, port: int, timeout: float) -> tuple[str, float]:
    """(``accepted``, ``refused``, ``no answer in N s`` or the error, seconds it took)."""
    begin = time.monotonic()
    try:
        with socket.create_connection((address, port), timeout=timeout):
            outcome = "accepted"
    except ConnectionRefusedError:
        outcome = "refused"
    except TimeoutError:
        outcome = f"no answer in {timeout:.0f} s"
    except OSError as exc:
        outcome = exc.strerror or str(exc)
    return outcome, time.monotonic() - begin


def _reservation(networks: Networks | Exception, bridge: str, mac: str) -> tuple[IPv4Address | None, str]:
    if not isinstance(networks, Networks):
        return None, ""
    for network in networks.values():
        if network.bridge == bridge and mac in network.reservations:
            address = network.reservations[mac]
            return address, f"network {network.name}'s live status: <host mac='{mac}' ip='{address}'/>"
    return None, ""


def _explicit(forward: ForwardView) -> bool:
    """The forward's address is a guest-address of the config's (metadata's cannot be seen in
    the record: check_lease says so where it may be one)."""
    config, fw = forward.survey.config, forward.forward
    if not isinstance(config, Config):
        return False
    specs = config.specs_for(forward.domain.name, forward.domain.uuid)
    return any(s.where == fw.where and s.guest_address == fw.guest for s in specs)


def _moved(
    subject: str, mac: str, now: IPv4Address, recorded: IPv4Address | None, evidence: str, name: str, what: str
) -> Finding:
    return Finding(
        "lease.moved",
        FAIL,
        subject,
        f"{mac}'s {what} is {now}, but the rules send to {recorded or 'nothing yet'}",
        evidence,
        f"# apply again: it resolves the address anew\nlibvirt-portfwd apply {name}",
    )


def _lease_line(path: str, lease: Lease, now: float) -> str:
    mac, address, expiry = lease
    if not expiry:
        until = "never expires"
    elif expiry >= now:
        until = f"expires {when(expiry)}, in {expiry - now:.0f} s"
    else:
        until = f"expired {when(expiry)}, {now - expiry:.0f} s ago"
    return f'{path}: {{"mac-address": "{mac}", "ip-address": "{address}", "expiry-time": {expiry}}} ({until})'


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None
