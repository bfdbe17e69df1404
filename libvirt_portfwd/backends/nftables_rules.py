"""nftables backend, its rules: what a change reads, and the transaction it renders.

Our table ``ip libvirt_portfwd`` holds, per protocol, hash maps from host address and port
(or port alone, for forwards on every local address) to guest address and port, so that a
packet costs the same lookups however many forwards there are. Forwards limited to source
networks or an inbound interface go through a verdict map to their domain's own chain.
Every element and rule carries its domain's UUID in a comment.

libvirt's own nftables table rejects what enters its networks in ``guest_input``; an accept
elsewhere does not override that. So one rule of ours, the *gate*, stands first in that chain
and accepts exactly the connections our DNAT marked (a ct mark bit). It is the only thing we
write into a table that is not ours; a change only touches it when it is missing or misplaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import names
from ..model import Forward, Plan
from ..run import run_all

PROTOCOLS = ("tcp", "udp", "sctp")
GATE = f'ct mark & {names.CT_MARK:#010x} == {names.CT_MARK:#010x} ct status dnat accept comment "{names.tag()}"'


@dataclass(frozen=True)
class Entry:
    """One map element: ``key : value``, tagged with its domain."""

    map: str
    key: str
    value: str
    uuid: str


@dataclass(frozen=True)
class DomainRules:
    """What one domain owns in our table: map elements, and a chain for restricted forwards."""

    uuid: str
    chain: str
    entries: tuple[Entry, ...]
    restricted: tuple[Forward, ...]
    bridges: tuple[str, ...] = ()

    @property
    def maps(self) -> tuple[tuple[str, tuple[Entry, ...]], ...]:
        """The entries by map, maps in name order (what jinja's groupby made, in Python: faster)."""
        by_map: dict[str, list[Entry]] = {}
        for entry in self.entries:
            by_map.setdefault(entry.map, []).append(entry)
        return tuple((name, tuple(by_map[name])) for name in sorted(by_map))


@dataclass(frozen=True)
class Gate:
    """Where our gate must go, and what of ours is there now (rule handles)."""

    present: bool  # libvirt's table and chain exist
    ok: bool  # exactly one gate, and it is the first rule
    handles: tuple[int | str, ...] = ()  # a str: the stand-in nftables.bind() replaces


@dataclass(frozen=True)
class Transaction:
    base: bool = False  # declare our table, maps and hook chains (idempotent)
    reset: bool = False  # delete our table first (rebuild)
    delete_table: bool = False
    add: tuple[DomainRules, ...] = ()
    remove: tuple[DomainRules, ...] = ()
    gate_drop: tuple[int | str, ...] = ()
    gate_insert: bool = False
    protocols: tuple[str, ...] = field(default=PROTOCOLS)


def domain_rules(plan: Plan) -> DomainRules:
    chain = names.domain_chain(plan.uuid)
    entries: dict[Entry, None] = {}  # in order, each once: a list's `in` made 65,535 ports cost minutes
    restricted: list[Forward] = []
    for forward in plan.forwards:
        if forward.guest is None:
            continue
        any_address = forward.address is None
        if forward.sources or forward.dev:
            restricted.append(forward)
            for port in range(forward.start, forward.end + 1):
                key = str(port) if any_address else f"{forward.address} . {port}"
                suffix = "_any" if any_address else ""
                entries[Entry(f"jump_{forward.proto}{suffix}", key, f"jump {chain}", plan.uuid)] = None
            continue
        for port in range(forward.start, forward.end + 1):
            key = str(port) if any_address else f"{forward.address} . {port}"
            value = f"{forward.guest} . {forward.guest_port + port - forward.start}"
            entries[Entry(f"dnat_{forward.proto}{'_any' if any_address else ''}", key, value, plan.uuid)] = None
    bridges = tuple(sorted({f.bridge for f in plan.forwards}))
    return DomainRules(plan.uuid, chain, tuple(entries), tuple(restricted), bridges)


def render_change(plan: Plan, gate: Gate, previous: str = "") -> str:
    """Add (or replace: ``previous`` is the removal prerendered when it went live) one domain."""
    tx = Transaction(
        base=True,
        add=(domain_rules(plan),),
        gate_drop=() if gate.ok or not gate.present else gate.handles,
        gate_insert=gate.present and not gate.ok,
    )
    return previous + _render(tx)


def render_removal(plan: Plan, gate: Gate | None, last: bool) -> str:
    """Remove one domain; the last one takes our table and the gate with it."""
    if last:
        handles = gate.handles if gate is not None and gate.present else ()
        return _render(Transaction(delete_table=True, gate_drop=handles))
    return _render(Transaction(remove=(domain_rules(plan),)))


def render_rebuild(plans: list[Plan], gate: Gate) -> str:
    """All of our rules from scratch: the table replaced whole, the gate made right."""
    if not plans:
        return _render(Transaction(delete_table=True, gate_drop=gate.handles if gate.present else ()))
    return _render(
        Transaction(
            base=True,
            reset=True,
            add=tuple(domain_rules(p) for p in plans),
            gate_drop=() if gate.ok or not gate.present else gate.handles,
            gate_insert=gate.present and not gate.ok,
        )
    )


def observe_gate() -> Gate:
    """Read libvirt's guest_input chain (small: one rule per network and ours)."""
    from .nftables import read_gate

    present, ok, handles = read_gate()
    return Gate(present=present, ok=ok, handles=handles)


def _render(tx: Transaction) -> str:
    from ..render import render

    # one domain's change, not a rebuild; and not one of thousands of elements, whose text would
    # not be kept anyway (render.CACHE_ENTRY_MAX) but whose key alone costs a repr of all of them
    cached = len(tx.add) + len(tx.remove) <= 1 and sum(len(d.entries) for d in (*tx.add, *tx.remove)) <= 1024
    return render("nftables.j2", cached=cached, tx=tx, mark=f"{names.CT_MARK:#010x}", gate=GATE)


def live_uuids() -> set[str]:
    """Domains with elements or rules in our table, when packets can reach them: the gate in
    place, and our dispatch rules intact (``nft flush table`` keeps the maps' elements)."""
    if not observe_gate().ok:
        return set()
    [(code, out, _)] = run_all([["nft", "list", "table", "ip", names.NFT_TABLE]])
    if code != 0 or not _dispatch_intact(out):
        return set()
    return _tagged(out)


def owner_uuids() -> set[str]:
    """Domains with any element or rule in our table."""
    [(code, out, _)] = run_all([["nft", "list", "table", "ip", names.NFT_TABLE]])
    return _tagged(out) if code == 0 else set()


def _tagged(listing: str) -> set[str]:
    prefix = f'comment "{names.tag()}:'
    return {part.split('"', 1)[0] for part in listing.split(prefix)[1:]}


def _dispatch_intact(listing: str) -> bool:
    """The hook chains' jumps and the forwards chain's map lookups are all there."""
    lines = listing.splitlines()
    jumps = sum("jump forwards" in line for line in lines)
    lookups = {
        proto: sum(f"@jump_{proto}" in line or f"map @dnat_{proto}" in line for line in lines) for proto in PROTOCOLS
    }
    return jumps == 2 and all(count == 4 for count in lookups.values())
