"""The pipeline's middle: XML -> domain -> plan -> recorded state -> one backend transaction.

Shared by the hook, the lease waiter and the CLI, always under the state lock (intents.py takes
it and asks for the change); a rule change is one transaction, and the record is written only
after it was applied. Removal lives in teardown (the hook's light stop path); repairs, the
lease waiter's apply and sync in reconcile.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from ipaddress import IPv4Address

from . import log, state
from .backends import select_backend
from .config import Config, load_config
from .domain import Domain, parse_domain
from .errors import FirewallError, PortfwdError
from .leases import lease_path, load_leases
from .network import Network, load_networks
from .paths import Paths
from .plan import ClaimIndex, Plan, build_plan, check_listeners, collect_specs
from .records import Record, load_record, save_record
from .teardown import remove_locked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .backends.base import Backend
    from .listeners import Listener

BOOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hooks", "boot.py")


@dataclass(frozen=True)
class Prepared:
    domain: Domain
    config: Config
    plan: Plan


@dataclass(frozen=True)
class Host:
    """What every domain's plan is resolved against: the config, libvirt's networks, the leases."""

    config: Config
    networks: dict[str, Network]
    leases: Callable[[str], dict[str, IPv4Address]]


def read_host(paths: Paths) -> Host:
    return Host(load_config(paths.config, paths.config_cache), load_networks(paths.network_dir), lease_lookup(paths))


def prepare(xml: bytes, paths: Paths, where: str = "domain XML", host: Host | None = None) -> Prepared:
    """Parse, validate and resolve; no side effects. Raises PortfwdError naming the domain."""
    domain = parse_domain(xml, where)
    try:
        host = host or read_host(paths)
        specs = collect_specs(domain, host.config)
        plan = build_plan(domain, specs, host.config, host.networks, host.leases)
    except PortfwdError as exc:
        raise exc.for_domain(domain.name) from None
    return Prepared(domain, host.config, plan)


def lease_lookup(paths: Paths) -> Callable[[str], dict[str, IPv4Address]]:
    @cache
    def lookup(bridge: str) -> dict[str, IPv4Address]:
        return load_leases(lease_path(paths.dnsmasq_dir, bridge))

    return lookup


def check(xml: bytes, paths: Paths) -> Prepared:
    """Everything apply would refuse, refused now: bad input, host port conflicts, host ports in use."""
    prepared = prepare(xml, paths)
    check_conflicts(prepared.plan, prepared.config, state.read_index(paths))
    return prepared


def apply_locked(prepared: Prepared, xml: bytes, paths: Paths) -> str:
    """Under the lock already held: the domain's rules exactly its plan (or waiting for a lease)."""
    plan, config = prepared.plan, prepared.config
    if not plan.forwards:
        return remove_locked(plan.uuid, paths, plan.name) if state.read(paths, plan.uuid) else "no forwards"
    index = state.read_index(paths)
    check_conflicts(plan, config, index)
    if not plan.waiting_macs:
        commit(plan, config, paths, index, xml)
        return f"live: {describe(plan)}"
    current = index.get(plan.uuid)
    if current is not None and current["status"] == state.LIVE:
        return "kept live rules (no lease now)"
    token = _save_waiting(paths, plan, xml)
    start_waiter(paths, plan.uuid, token)
    log.info(f"{plan.name}: waiting for a lease of {', '.join(plan.waiting_macs)} (up to {config.lease_wait:.0f} s)")
    return "waiting for lease"


def start_waiter(paths: Paths, uuid: str, token: str) -> None:
    """A fully detached waiter: own session, no inherited descriptors, so libvirt never waits."""
    os.makedirs(paths.run_dir, exist_ok=True)
    with open(os.path.join(paths.run_dir, "waiter.log"), "ab") as logfile:
        subprocess.Popen(
            [sys.executable, "-I", "-S", BOOT, "waiter", "--config", paths.config, uuid, token],
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=logfile,
            start_new_session=True,
            close_fds=True,
            cwd="/",
            env={**os.environ, "LIBVIRT_PORTFWD_ROOT": paths.root} if paths.root else None,
        )


def describe(plan: Plan) -> str:
    return ", ".join(f"{f.claim} -> {f.guest}:{f.guest_port}" for f in plan.forwards) or "no forwards"


def available_backends_except(backend: Backend) -> Iterable[Backend]:
    from .backends import available_backends

    return [b for b in available_backends() if b.name != backend.name]


def commit(plan: Plan, config: Config, paths: Paths, index: dict[str, state.Data], xml: bytes = b"") -> None:
    """Apply under the lock already held, then record (with the removal prerendered, and the
    declaration ``xml`` it was made from: the domain XML, so that it can be planned again).

    If the transaction is refused (the firewall is not as our records say: someone flushed or
    edited our rules), nothing changed; then all of our rules are rebuilt from the records.
    """
    backend = select_backend(config.backend, paths.network_dir)
    live = {
        u: e for u, e in index.items() if u != plan.uuid and e["status"] == state.LIVE and e["backend"] == backend.name
    }
    current = state.read(paths, plan.uuid) if plan.uuid in index else None
    previous = ""
    if current and current.get("status") == state.LIVE and current.get("backend") == backend.name:
        previous = (current.get("teardown") or {}).get("other", "")
    try:
        try:
            backend.apply(backend.change(plan, len(live), previous))
        except FirewallError as exc:
            log.error(f"{plan.name}: {exc.why}; rebuilding every forward from the records")
            others = [r.plan for r in (load_record(paths, u) for u in live) if r is not None]
            backend.apply(backend.rebuild([*others, plan]))
    except PortfwdError as exc:
        raise exc.for_domain(plan.name) from None
    record = Record.from_plan(plan, backend.name, state.LIVE)
    record.teardown = backend.removal(plan)
    record.xml = xml.decode("utf-8", "replace")
    save_record(paths, record, index)
    for forward in plan.forwards:
        log.info(f"{plan.name}: forward {forward.claim} -> {forward.guest}:{forward.guest_port} live ({backend.name})")


def check_conflicts(plan: Plan, config: Config, index: dict[str, state.Data]) -> None:
    """Refuse a plan that claims what another domain holds, or a port a host process listens on."""
    claims = ClaimIndex()
    for uuid, entry in index.items():
        if uuid != plan.uuid:
            claims.add_raw(entry["name"], uuid, entry.get("claims") or ())
    claims.check(plan)
    check_host_ports(plan, config)


def check_host_ports(plan: Plan, config: Config, listeners: Sequence[Listener] | None = None) -> None:
    """Refuse a plan whose forwards would capture a listening socket of this network namespace
    that host_ports.allow does not name (listeners.py). The listeners are read only for the
    protocols of forwards whose ports are not all allowed (or ``listeners``, read once by the
    caller)."""
    from . import listeners as sockets

    if listeners is None:
        protos = {f.proto for f in plan.forwards if not config.host_ports.allows_range(f.proto, f.start, f.end)}
        listeners = sockets.read_listeners(protos) if protos else ()
    check_listeners(plan, listeners, config, sockets.owner)


def waiting_record(plan: Plan, xml: bytes) -> Record:
    record = Record.from_plan(plan, "", state.WAITING)
    record.token = os.urandom(8).hex()
    record.xml = xml.decode("utf-8", "replace")
    record.waiting_macs = list(plan.waiting_macs)
    return record


def _save_waiting(paths: Paths, plan: Plan, xml: bytes) -> str:
    record = waiting_record(plan, xml)
    save_record(paths, record)
    return record.token
