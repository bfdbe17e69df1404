"""The pipeline's middle: XML -> domain -> plan -> recorded state -> one backend transaction.

Shared by the hook, the lease waiter and the CLI. Every change runs under the state lock;
a rule change is one transaction, and the record is written only after it was applied.
"""

import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from ipaddress import IPv4Address

from . import log
from .backends import Backend, select_backend
from .config import Config, load_config
from .domain import Domain, parse_domain
from .errors import PortfwdError
from .leases import lease_path, load_leases
from .network import load_networks
from .paths import Paths
from .plan import Plan, build_plan, collect_specs, find_conflicts
from .state import LIVE, WAITING, Record, delete_record, load_record, load_records, locked, save_record


@dataclass(frozen=True)
class Prepared:
    domain: Domain
    config: Config
    plan: Plan


def prepare(xml: bytes, paths: Paths, where: str = "domain XML") -> Prepared:
    """Parse, validate and resolve; no side effects. Raises PortfwdError naming the domain."""
    domain = parse_domain(xml, where)
    try:
        config = load_config(paths.config, paths.config_cache)
        specs = collect_specs(domain, config)
        plan = build_plan(domain, specs, config, load_networks(paths.network_dir), lease_lookup(paths))
    except PortfwdError as exc:
        raise exc.for_domain(domain.name) from None
    return Prepared(domain, config, plan)


def lease_lookup(paths: Paths) -> Callable[[str], dict[str, IPv4Address]]:
    @cache
    def lookup(bridge: str) -> dict[str, IPv4Address]:
        return load_leases(lease_path(paths.dnsmasq_dir, bridge))

    return lookup


def check(xml: bytes, paths: Paths) -> Prepared:
    """Everything apply would refuse, refused now: bad input and host port conflicts."""
    prepared = prepare(xml, paths)
    others = [r for r in load_records(paths) if r.uuid != prepared.plan.uuid]
    find_conflicts(prepared.plan, [(r.name, r.uuid, r.claims) for r in others])
    return prepared


def apply(xml: bytes, paths: Paths, *, spawn_waiter: bool = True) -> str:
    """Bring the domain's rules in line with its declaration; return what was done."""
    prepared = prepare(xml, paths)
    plan, config = prepared.plan, prepared.config
    if not plan.forwards:
        return remove(plan.uuid, paths, plan.name) if load_record(paths, plan.uuid) else "no forwards"
    with locked(paths):
        records = load_records(paths)
        current = next((r for r in records if r.uuid == plan.uuid), None)
        others = [r for r in records if r.uuid != plan.uuid]
        find_conflicts(plan, [(r.name, r.uuid, r.claims) for r in others])
        if plan.waiting_macs:
            if current is not None and current.status == LIVE:
                return "kept live rules (no lease now)"
            token = secrets.token_hex(8)
            record = Record.from_plan(plan, "", WAITING, token=token, xml=xml.decode("utf-8", "replace"))
            record.waiting_macs = list(plan.waiting_macs)
            save_record(paths, record)
        else:
            _commit(plan, config, paths, others)
            return f"live: {describe(plan)}"
    if spawn_waiter:
        start_waiter(paths, plan.uuid, token)
    log.info(f"{plan.name}: waiting for a lease of {', '.join(plan.waiting_macs)} (up to {config.lease_wait:.0f} s)")
    return "waiting for lease"


def _commit(plan: Plan, config: Config, paths: Paths, others: list[Record]) -> None:
    """Apply under the lock already held, then record."""
    backend = select_backend(config.backend)
    live_others = sum(1 for r in others if r.status == LIVE and r.backend == backend.name)
    try:
        backend.apply(backend.change(plan.uuid, plan, live_others))
    except PortfwdError as exc:
        raise exc.for_domain(plan.name) from None
    save_record(paths, Record.from_plan(plan, backend.name, LIVE))
    for forward in plan.forwards:
        log.info(f"{plan.name}: forward {forward.claim} -> {forward.guest}:{forward.guest_port} live ({backend.name})")


def apply_waiting(paths: Paths, uuid: str, token: str) -> str | None:
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
    with locked(paths):
        record = load_record(paths, uuid)
        if record is None or record.token != token:
            return "cancelled"
        others = [r for r in load_records(paths) if r.uuid != uuid]
        find_conflicts(prepared.plan, [(r.name, r.uuid, r.claims) for r in others])
        _commit(prepared.plan, prepared.config, paths, others)
    return f"live: {describe(prepared.plan)}"


def remove(uuid: str, paths: Paths, name: str = "") -> str:
    """Take the domain's recorded rules away (from the record, not from today's config)."""
    with locked(paths):
        record = load_record(paths, uuid)
        if record is None:
            return "nothing recorded"
        name = record.name or name
        if record.status == LIVE:
            backend = select_backend(record.backend)
            others = sum(
                1 for r in load_records(paths) if r.uuid != uuid and r.status == LIVE and r.backend == backend.name
            )
            try:
                backend.apply(backend.change(uuid, None, others))
            except PortfwdError as exc:
                raise exc.for_domain(name) from None
        delete_record(paths, uuid)
    log.info(f"{name}: forwards removed ({len(record.forwards)} recorded)")
    return "removed"


def start_waiter(paths: Paths, uuid: str, token: str) -> None:
    """A fully detached waiter: own session, no inherited descriptors, so libvirt never waits."""
    os.makedirs(paths.run_dir, exist_ok=True)
    with open(os.path.join(paths.run_dir, "waiter.log"), "ab") as logfile:
        subprocess.Popen(
            [sys.executable, "-m", "libvirt_portfwd.waiter", "--config", paths.config, uuid, token],
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=logfile,
            start_new_session=True,
            close_fds=True,
            cwd="/",
        )


def describe(plan: Plan) -> str:
    return ", ".join(f"{f.claim} -> {f.guest}:{f.guest_port}" for f in plan.forwards) or "no forwards"


def sync(paths: Paths, running: dict[str, bytes]) -> list[PortfwdError]:
    """Make the firewall hold exactly the forwards of the running domains (uuid -> XML).

    Adds what is missing, removes what is stale (stopped domains, flushed or foreign edits),
    all in one transaction per backend. A domain whose declaration is now broken keeps the
    forwards it had; its error is returned with the others.
    """
    errors: list[PortfwdError] = []
    waiting: list[tuple[str, str]] = []
    with locked(paths):
        config = load_config(paths.config, paths.config_cache)
        backend = select_backend(config.backend)
        old = {r.uuid: r for r in load_records(paths)}
        records: list[Record] = []
        for uuid, xml in sorted(running.items()):
            try:
                plan = prepare(xml, paths).plan
                find_conflicts(plan, [(r.name, r.uuid, r.claims) for r in records])
            except PortfwdError as exc:
                errors.append(exc)
                if uuid in old and old[uuid].status == LIVE:
                    records.append(old[uuid])
                continue
            if not plan.forwards:
                continue
            if plan.waiting_macs:
                token = secrets.token_hex(8)
                record = Record.from_plan(plan, "", WAITING, token=token, xml=xml.decode("utf-8", "replace"))
                record.waiting_macs = list(plan.waiting_macs)
                records.append(record)
                waiting.append((uuid, token))
            else:
                records.append(Record.from_plan(plan, backend.name, LIVE))
        live = [r.plan for r in records if r.status == LIVE]
        backend.apply(backend.rebuild(live))
        for record in records:
            record.backend = backend.name if record.status == LIVE else ""
            save_record(paths, record)
        for uuid in set(old) - {r.uuid for r in records}:
            delete_record(paths, uuid)
    for uuid, token in waiting:
        start_waiter(paths, uuid, token)
    log.info(
        f"sync: {len(live)} domain(s) live, {len(waiting)} waiting for a lease, "
        f"{len(set(old) - {r.uuid for r in records})} removed"
    )
    return errors


def remove_all(paths: Paths) -> int:
    """Every rule of ours, in every available backend, and every record (uninstall)."""
    from .backends import backend_names

    with locked(paths):
        records = load_records(paths)
        for name in backend_names():
            backend = select_backend(name) if name == "none" else _available(name)
            if backend is not None:
                backend.apply(backend.rebuild([]))
        for record in records:
            delete_record(paths, record.uuid)
    log.info(f"removed every forward ({len(records)} domain(s))")
    return len(records)


def _available(name: str) -> Backend | None:
    try:
        return select_backend(name)
    except PortfwdError:
        return None
