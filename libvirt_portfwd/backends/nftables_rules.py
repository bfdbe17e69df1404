"""nftables backend, its rules (pure): the transaction a change renders, and what a ruleset read
back (nft_listing) says of our rules.

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
from ..findings import FAIL, INFO, OK, SYNC_FIX, Finding, firewall
from ..model import Forward, Plan
from .nft_listing import Ruleset
from .nft_text import GATE, compose, split

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .accept import Neighbour

PROTOCOLS = ("tcp", "udp", "sctp")
TABLE, LIBVIRT_TABLE, GATE_CHAIN = names.NFT_TABLE, names.LIBVIRT_NFT_TABLE, names.LIBVIRT_NFT_GATE_CHAIN
HOOK_CHAINS = ("prerouting", "output")  # each: one rule of ours, jump forwards
DISPATCH = "forwards"


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
    handles: tuple[int, ...] = ()


@dataclass(frozen=True)
class Transaction:
    base: bool = False  # declare our table, maps and hook chains (idempotent)
    reset: bool = False  # delete our table first (rebuild)
    delete_table: bool = False
    add: tuple[DomainRules, ...] = ()
    remove: tuple[DomainRules, ...] = ()
    gate_drop: tuple[int, ...] = ()
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


def render_change(plan: Plan, gate: Gate, previous: str = "", neighbour: Neighbour | None = None) -> str:
    """Add (or replace: ``previous`` is the removal prerendered when it went live) one domain;
    beside a ``neighbour`` whose FORWARD drops, its accepts there too (accept.py), written
    first. The accepts' own previous removal is not needed: the change rewrites its chain whole."""
    tx = Transaction(
        base=True,
        add=(domain_rules(plan),),
        gate_drop=() if gate.ok or not gate.present else gate.handles,
        gate_insert=gate.present and not gate.ok,
    )
    nft = split(previous)[1] + _render(tx)
    if neighbour is None:
        return nft
    from . import accept

    return compose(accept.render_change(plan, neighbour), nft, xt_first=neighbour.drops)


def render_removal(plan: Plan, gate: Gate | None, last: bool) -> str:
    """Remove one domain; the last one takes our table and the gate with it."""
    if last:
        handles = gate.handles if gate is not None and gate.present else ()
        return _render(Transaction(delete_table=True, gate_drop=handles))
    return _render(Transaction(remove=(domain_rules(plan),)))


def render_removals(plan: Plan, neighbour: Neighbour | None = None) -> dict[str, str]:
    """The removal prerendered (``other`` domains stay, or the ``last``), with the accepts'
    removal beside a neighbour's drop, after nft's (the DNAT goes first)."""
    from . import accept

    xt = accept.render_removals(plan.uuid, neighbour) if neighbour is not None else {"other": "", "last": ""}
    return {
        "other": compose(xt["other"], render_removal(plan, None, last=False), xt_first=False),
        "last": compose(xt["last"], render_removal(plan, None, last=True), xt_first=False),
    }


def render_rebuild(plans: list[Plan], gate: Gate, neighbour: Neighbour | None = None) -> str:
    """All of our rules from scratch: the table replaced whole, the gate made right, and the
    accepts beside a neighbour's drop exactly the plans' (or gone, where nothing drops)."""
    if not plans:
        nft = _render(Transaction(delete_table=True, gate_drop=gate.handles if gate.present else ()))
    else:
        nft = _render(
            Transaction(
                base=True,
                reset=True,
                add=tuple(domain_rules(p) for p in plans),
                gate_drop=() if gate.ok or not gate.present else gate.handles,
                gate_insert=gate.present and not gate.ok,
            )
        )
    if neighbour is None:
        return nft
    from . import accept

    return compose(accept.render_rebuild(plans, neighbour), nft, xt_first=neighbour.drops and bool(plans))


def _render(tx: Transaction) -> str:
    from ..render import render

    # one domain's change, not a rebuild; and not one of thousands of elements, whose text would
    # not be kept anyway (render.CACHE_ENTRY_MAX) but whose key alone costs a repr of all of them
    cached = len(tx.add) + len(tx.remove) <= 1 and sum(len(d.entries) for d in (*tx.add, *tx.remove)) <= 1024
    return render("nftables.j2", cached=cached, tx=tx, mark=f"{names.CT_MARK:#010x}", gate=GATE)


def gate_of(ruleset: Ruleset) -> Gate:
    """libvirt's guest_input in a listing: where our gate must go, and what of ours is there."""
    rules = ruleset.rules_of("ip", LIBVIRT_TABLE, GATE_CHAIN)
    if ruleset.chain("ip", LIBVIRT_TABLE, GATE_CHAIN) is None:
        return Gate(present=False, ok=True)
    ours = [i for i, rule in enumerate(rules) if rule.comment == names.tag()]
    return Gate(present=True, ok=ours == [0], handles=tuple(rules[i].handle for i in ours))


def owner_uuids(ruleset: Ruleset) -> set[str]:
    """Domains with any element or rule in our table."""
    return ruleset.tagged("ip", TABLE, f"{names.tag()}:")


def live_uuids(ruleset: Ruleset) -> set[str]:
    """Domains whose rules packets reach: no finding about our table or the gate fails."""
    if any(f.failed for f in table_findings(ruleset)):
        return set()
    return owner_uuids(ruleset)


def findings(ruleset: Ruleset, live: dict[str, str], neighbour: Neighbour | None = None) -> list[Finding]:
    """Our table and gate as read back, then each live domain (uuid -> name): present or not
    (and, beside a neighbour's FORWARD drop, its accepts there reached or not)."""
    from . import accept

    found = table_findings(ruleset) if live or (("ip", TABLE) in ruleset.tables) else []
    owners = owner_uuids(ruleset)
    reached = accept.reached(neighbour) if neighbour is not None and neighbour.drops else None
    for uuid, name in sorted(live.items(), key=lambda item: item[1]):
        if uuid in owners and reached is not None and uuid not in reached:
            chain = names.domain_chain(uuid, names.ACCEPT_CHAIN_PREFIX)
            summary = f"its accepts beside ip filter FORWARD's drop are not reached (chain {chain})"
            evidence = f"ip filter: {names.ACCEPT_CHAIN} does not jump to {chain}, or it is empty, or not jumped to"
            found.append(Finding("rules.domain", FAIL, name, summary, evidence, SYNC_FIX))
        elif uuid in owners:
            found.append(Finding("rules.domain", OK, name, "its map elements and rules are in our table"))
        else:
            found.append(
                Finding(
                    "rules.domain",
                    FAIL,
                    name,
                    "recorded live, but nothing of it is in our table",
                    f"no element or rule of table ip {TABLE} has the comment {names.tag(uuid)}",
                    SYNC_FIX,
                )
            )
    found += counter_findings(ruleset)
    return found


def table_findings(ruleset: Ruleset) -> list[Finding]:
    """Our table, its hook chains' jumps, its dispatch lookups, and the gate in libvirt's chain."""
    if ("ip", TABLE) not in ruleset.tables:
        return [firewall("rules.table", FAIL, f"table ip {TABLE} is missing", "nft list tables", SYNC_FIX)]
    found = [firewall("rules.table", OK, f"table ip {TABLE} is there")]
    for chain in HOOK_CHAINS:
        jumps = [r for r in ruleset.rules_of("ip", TABLE, chain) if r.comment == names.tag() and r.target == DISPATCH]
        severity = OK if len(jumps) == 1 else FAIL
        summary = f"{chain} jumps to {DISPATCH}" if jumps else f"{chain} does not jump to {DISPATCH}"
        evidence = "" if severity == OK else f"{len(jumps)} rule(s) of ours jump to {DISPATCH} in chain {chain}"
        found.append(firewall("rules.hooks", severity, summary, evidence, "" if severity == OK else SYNC_FIX))
    refs = set().union(*(r.refs for r in ruleset.rules_of("ip", TABLE, DISPATCH)))
    wanted = {f"@{kind}_{proto}{any_}" for proto in PROTOCOLS for kind in ("dnat", "jump") for any_ in ("", "_any")}
    missing = sorted(wanted - refs)
    if missing:
        evidence = f"chain {DISPATCH} looks up no {', '.join(missing)}"
        found.append(firewall("rules.dispatch", FAIL, "our lookups were flushed", evidence, SYNC_FIX))
    else:
        found.append(firewall("rules.dispatch", OK, f"{DISPATCH} looks up every map"))
    found.append(gate_finding(ruleset))
    return found


def gate_finding(ruleset: Ruleset) -> Finding:
    gate = gate_of(ruleset)
    if not gate.present:
        return firewall("rules.gate", OK, f"no {LIBVIRT_TABLE} {GATE_CHAIN} (libvirt runs no nftables network)")
    if gate.ok:
        return firewall("rules.gate", OK, f"our gate is first in libvirt's {GATE_CHAIN}")
    rules = ruleset.rules_of("ip", LIBVIRT_TABLE, GATE_CHAIN)
    where = "missing" if not gate.handles else "not first" if len(gate.handles) == 1 else "there more than once"
    evidence = f"chain ip {LIBVIRT_TABLE} {GATE_CHAIN}: {len(rules)} rule(s), ours at handle(s) {list(gate.handles)}"
    return firewall("rules.gate", FAIL, f"our gate in libvirt's {GATE_CHAIN} is {where}", evidence, SYNC_FIX)


def counter_findings(ruleset: Ruleset) -> list[Finding]:
    """Packets our DNAT lookups translated and our gate accepted (every domain's together: the
    maps' elements keep no counters of their own)."""
    counted = [
        (rule.counter[0], ", ".join(sorted(rule.refs)))
        for rule in ruleset.rules_of("ip", TABLE, DISPATCH)
        if rule.counter is not None and "dnat" in rule.statements
    ]
    found = []
    if counted:
        per_map = "; ".join(f"{refs}: {packets}" for packets, refs in counted if packets)
        total = sum(packets for packets, _ in counted)
        found.append(firewall("counters.translated", INFO, f"{total} packet(s) translated by our DNAT", per_map))
    gate = [r for r in ruleset.rules_of("ip", LIBVIRT_TABLE, GATE_CHAIN) if r.comment == names.tag()]
    if gate and gate[0].counter is not None:
        found.append(firewall("counters.accepted", INFO, f"{gate[0].counter[0]} packet(s) accepted by our gate"))
    return found
