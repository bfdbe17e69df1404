"""Bringing the firewall and the records together when no single domain's hook asks: the lease
waiter's apply, repairs (the service, the network hook) and ``sync`` (after a reboot, a flush,
a crash). Each carries out pending intents first (intents.py): they are the latest word.
"""

from __future__ import annotations

from functools import cache

from . import intents, log, state
from .actions import (
    available_backends_except,
    check_conflicts,
    check_host_ports,
    commit,
    describe,
    prepare,
    read_host,
    start_waiter,
    waiting_record,
)
from .backends import select_backend
from .errors import PortfwdError
from .listeners import read_listeners
from .paths import Paths
from .plan import ClaimIndex
from .records import Record, encode, load_record, load_records


def apply_waiting(paths: Paths, uuid: str, token: str, lock_timeout: float = 60.0) -> str | None:
    """Waiter: resolve the waiting domain again; apply if every address is known now.

    Returns None while still waiting; a message once done, or once the wait became moot
    (the domain stopped or started again meanwhile: its record or token changed).
    """
    record = load_record(paths, uuid)
    if record is None or record.token != token:
        return "cancelled"
    prepared = prepare(record.xml.encode(), paths)
    if prepared.plan.waiting_macs:
        return None
    with state.locked(paths, lock_timeout):
        intents.carry_out(paths)  # a stop that could not finish comes first
        current = state.read(paths, uuid)
        if current is None or current.get("token") != token:
            return "cancelled"
        index = state.read_index(paths)
        if not prepared.plan.forwards:  # its config entry went meanwhile: nothing to wait for
            state.delete(paths, uuid, index)
            return "no forwards any more: nothing to wait for"
        check_conflicts(prepared.plan, prepared.config, index)
        commit(prepared.plan, prepared.config, paths, index, record.xml.encode())
    return f"live: {describe(prepared.plan)}"


def apply_all_waiting(paths: Paths, lock_timeout: float = 60.0) -> dict[str, str]:
    """The service: every waiting domain (its waiter running, timed out, or killed) resolved
    again; name -> what was done, for those done (the rest still wait)."""
    done = {}
    for uuid, entry in state.read_index(paths).items():
        if entry.get("status") != state.WAITING:
            continue
        record = load_record(paths, uuid)
        if record is None:
            continue
        try:
            outcome = apply_waiting(paths, uuid, record.token, lock_timeout)
        except PortfwdError as exc:
            if exc.retry:  # the lock busy: raised, so that the service tries again
                raise
            outcome = f"not applied: {exc}"
        if outcome is not None and outcome != "cancelled":
            done[record.name] = outcome
    return done


def sync(paths: Paths, running: dict[str, bytes]) -> list[PortfwdError]:
    """Make the firewall hold exactly the forwards of the running domains (uuid -> XML).

    Adds what is missing, removes what is stale (stopped domains, flushed or foreign edits),
    in one transaction for the configured backend; every other backend is emptied. A domain
    whose declaration is now broken keeps the forwards it had; its error is returned.

    Pending intents come first: they are newer than ``running`` (a domain that stopped or
    started since libvirt was asked). The new records are written before the transaction: if
    sync dies in between, the records say what the firewall must hold, and the service's next
    pass (or any repair) rebuilds exactly that.
    """
    errors: list[PortfwdError] = []
    waiting: list[tuple[str, str]] = []
    with state.locked(paths):
        pending = state.pending_intents(paths)
        intents.carry_out(paths)
        running = {u: x for u, x in running.items() if pending.get(u, {}).get("op") != state.REMOVE}
        running |= {u: str(i["xml"]).encode() for u, i in pending.items() if i.get("op") == state.APPLY}
        host = read_host(paths)
        backend = select_backend(host.config.backend, paths.network_dir)
        old = {r.uuid: r for r in load_records(paths)}
        records: list[Record] = []
        claims = ClaimIndex()
        listening = cache(read_listeners)
        for uuid, xml in sorted(running.items()):
            try:
                plan = prepare(xml, paths, host=host).plan
                claims.check(plan)
                check_host_ports(plan, host.config, listening() if plan.forwards else ())  # read once
            except PortfwdError as exc:
                errors.append(exc)
                if uuid in old and old[uuid].status == state.LIVE:
                    records.append(old[uuid])
                    claims.add_plan(old[uuid].plan)
                continue
            claims.add_plan(plan)
            if not plan.forwards:
                continue
            record = Record.from_plan(plan, backend.name, state.LIVE)
            record.xml = xml.decode("utf-8", "replace")
            if plan.waiting_macs:
                record = waiting_record(plan, xml)
                waiting.append((uuid, record.token))
            records.append(record)
        live = [r.plan for r in records if r.status == state.LIVE]
        for record in records:
            if record.status == state.LIVE:
                record.backend, record.teardown = backend.name, backend.removal(record.plan)
        state.replace_all(paths, {r.uuid: encode(r) for r in records})
        for other in available_backends_except(backend):
            other.apply(other.rebuild([]))
        backend.apply(backend.rebuild(live))
    for uuid, token in waiting:
        start_waiter(paths, uuid, token)
    removed = len(set(old) - {r.uuid for r in records})
    log.info(f"sync: {len(live)} domain(s) live, {len(waiting)} waiting for a lease, {removed} removed")
    return errors


def repair(paths: Paths) -> int:
    """Make the firewall hold exactly what the records say: carry out pending intents, then, in
    every backend, rebuild our rules from the records if a recorded live forward is not
    reachable or rules of ours belong to no live record (left by a crash). Returns how many
    domains were wrong (0: nothing was changed). Never asks libvirt."""
    from .backends import available_backends, select_backend

    with state.locked(paths):
        intents.carry_out(paths)
        records = [r for r in load_records(paths) if r.status == state.LIVE and r.forwards]  # none: nothing to reach
        names = ({r.backend for r in records} | {b.name for b in available_backends()}) - {"none"}
        broken = 0
        for name in sorted(names):
            backend = select_backend(name)
            plans = [r.plan for r in records if r.backend == name]
            wanted = {p.uuid for p in plans}
            wrong = (wanted - backend.live()) | (backend.owners() - wanted)
            if wrong:
                backend.apply(backend.rebuild(plans))
                broken += len(wrong)
    return broken
