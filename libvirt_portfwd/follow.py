"""Follow the guest: a live forward is valid only while its guest holds the address it targets.

The service calls ``retarget`` when a lease or network file changes, and when the first lease
of a live forward stops counting (``next_expiry``: a little before it runs out, so that the
forward is gone by then), even if no file changes. Each live domain is
planned again from its record (the declaration it was made from, against today's config and
leases); where a guest address is no longer the MAC's (a new lease with another address, the
lease expired or dnsmasq gave that address to another MAC, the NIC gone), the domain's rules are
re-pointed at the new address in one transaction, or removed and the domain recorded as waiting
if it has none (it goes live again when a lease appears: the service follows waiting domains).
Then the conntrack entries of connections DNATed to an old address are deleted, so that an open
flow cannot keep reaching whoever holds that address next (``conntrack``; where it is missing,
the line that says so).
"""

from __future__ import annotations

from ipaddress import IPv4Address

from . import intents, log, state
from .actions import check_conflicts, commit, describe, prepare, start_waiter, waiting_record
from .errors import PortfwdError
from .leases import lease_path, next_expiry, read_leases
from .model import Forward, Plan
from .paths import Paths
from .records import Record, load_records, save_record
from .run import on_path, run_all
from .teardown import remove_locked


def retarget(paths: Paths, lock_timeout: float = 60.0) -> dict[str, str]:
    """Every live domain whose guest addresses moved, re-pointed (or waiting); name -> what was done.
    The lock is taken only when some domain moved (a lease file changes at every guest's renewal)."""
    if not any(_moved(paths, record) for record in load_records(paths)):
        return {}
    done: dict[str, str] = {}
    cut: list[tuple[str, IPv4Address, int, int]] = []
    with state.locked(paths, lock_timeout):
        intents.carry_out(paths)
        for record in load_records(paths):
            if not _moved(paths, record):
                continue
            try:
                outcome = _follow(paths, record, cut)
            except PortfwdError as exc:
                outcome = f"not re-pointed: {exc}"
            if outcome:
                done[record.name] = outcome
    if cut:
        cut_flows(cut)
    return done


def _moved(paths: Paths, record: Record) -> bool:
    """A live domain whose plan now targets other guest addresses. One that cannot be planned now
    (its network down for a moment, a config being edited) keeps its rules: its hooks say why."""
    if record.status != state.LIVE or not record.xml or not record.forwards:
        return False
    try:
        return _targets(prepare(record.xml.encode(), paths).plan) != _targets(record.plan)
    except PortfwdError:
        return False


def _follow(paths: Paths, record: Record, cut: list[tuple[str, IPv4Address, int, int]]) -> str:
    prepared = prepare(record.xml.encode(), paths)
    plan = prepared.plan
    if _targets(plan) == _targets(record.plan):
        return ""
    moved = set(_targets(record.plan)) - set(_targets(plan))
    cut += [(f.proto, f.guest, f.guest_port, f.guest_end) for f in record.forwards if f.guest and _target(f) in moved]
    if not plan.forwards:
        remove_locked(record.uuid, paths, record.name)
        return "removed (no forwards any more)"
    if plan.waiting_macs:  # an address gone, none new yet: nothing may reach the old one
        remove_locked(record.uuid, paths, record.name)
        waiting = waiting_record(plan, record.xml.encode())
        save_record(paths, waiting)
        start_waiter(paths, plan.uuid, waiting.token)
        return f"removed: no address for {', '.join(plan.waiting_macs)} now; waiting for a lease"
    index = state.read_index(paths)
    check_conflicts(plan, prepared.config, index)
    commit(plan, prepared.config, paths, index, record.xml.encode())
    return f"re-pointed: {describe(plan)}"


def _target(forward: Forward) -> tuple[str, str, str | None, int]:
    return (forward.mac, forward.proto, str(forward.guest) if forward.guest else None, forward.guest_port)


def _targets(plan: Plan) -> list[tuple[str, str, str | None, int]]:
    return sorted(_target(f) for f in plan.forwards)


def live_expiry(paths: Paths) -> float | None:
    """When the first lease a live forward targets stops counting (None: none expires, or none live)."""
    by_bridge: dict[str, set[str]] = {}
    for record in load_records(paths):
        if record.status == state.LIVE:
            for forward in record.forwards:
                by_bridge.setdefault(forward.bridge, set()).add(forward.mac)
    expiries = []
    for bridge, macs in by_bridge.items():
        try:
            expiry = next_expiry(read_leases(lease_path(paths.dnsmasq_dir, bridge)), macs)
        except PortfwdError:
            continue
        if expiry is not None:
            expiries.append(expiry)
    return min(expiries) if expiries else None


def cut_flows(flows: list[tuple[str, IPv4Address, int, int]]) -> None:
    """Delete the conntrack entries of connections whose replies come from an old guest address
    and port: DNATed to it by our forward (or opened to it from the host)."""
    if not on_path("conntrack"):
        log.error("conntrack is not installed: open connections to an old guest address were not cut")
        return
    argvs = [
        ["conntrack", "-D", "-p", proto, "--reply-src", str(address), "--reply-port-src", str(port)]
        for proto, address, start, end in flows
        for port in range(start, min(end, start + 63) + 1)  # a range's first ports: a bound on the work
    ]
    run_all(argvs)  # exit 1 with "0 flow entries have been deleted" is no error here
