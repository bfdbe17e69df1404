"""iptables backend, its rules (pure): the transaction a change renders, and what the tables read
back (xt_listing) say of our rules.

nat:    PREROUTING  -> PORTFWD -> PF<uuid in base32>   DNAT (and mark connections from a guest bridge)
        OUTPUT      -> PORTFWD                         the host reaching its own public address
        POSTROUTING:  masquerade the marked ones       hairpin: replies come back through the host
filter: FORWARD     -> PORTFWD -> PF<uuid in base32>   ACCEPT only what was DNATed to that guest port

Our FORWARD jump must stand above libvirt's LIBVIRT_FW* jumps, whose reject would shadow it.
A change reads only the chains it depends on (``iptables -S`` per chain costs the same however
big the ruleset is) and writes one domain chain, so its cost does not grow with other VMs.
"""

import itertools
import shlex
from dataclasses import dataclass, field

from .. import names
from ..findings import FAIL, INFO, OK, SYNC_FIX, WARN, Finding, firewall
from ..model import Plan
from .xt_listing import XtRuleset

LIBVIRT_CHAIN_PREFIX = "LIBVIRT_"
TAG = names.tag()
MARK = f"{names.CT_MARK:#x}"
TOP_JUMP = f"-m comment --comment {TAG} -j {names.DISPATCH_CHAIN}"  # as the template writes it


@dataclass(frozen=True)
class HookRule:
    """One rule of ours in a built-in chain; the template writes ``-I chain 1 spec``."""

    table: str
    chain: str
    spec: str


HOOK_RULES = (
    HookRule("nat", "PREROUTING", TOP_JUMP),
    HookRule("nat", "OUTPUT", f"! -d 127.0.0.0/8 {TOP_JUMP}"),
    HookRule(
        "nat",
        "POSTROUTING",
        f"-m connmark --mark {MARK}/{MARK} -m conntrack --ctstate DNAT -m comment --comment {TAG} -j MASQUERADE",
    ),
    HookRule("filter", "FORWARD", TOP_JUMP),
)
TABLES = ("nat", "filter")
# iptables-restore (legacy and nft alike) commits each table at its COMMIT line, so a change that
# spans both is atomic per table only. Order them so that the half applied alone, if the other
# is refused, opens nothing: adds write filter's accept first (it matches only connections our
# DNAT translated), removals take nat's DNAT away first. A refusal is then undone by a rebuild.
ADD_ORDER = ("filter", "nat")
REMOVE_ORDER = ("nat", "filter")


@dataclass(frozen=True)
class Layout:
    """Where a set of our chains lives: the tables (in add order), our rules in built-in chains,
    the dispatch chain and the domain chains' prefix. The iptables backend's is LAYOUT; the
    nftables backend's accept beside a neighbour's FORWARD drop (accept.py) is another one:
    the same renderer and template write both, so each rule's text exists once."""

    tables: tuple[str, ...]
    hooks: tuple[HookRule, ...]
    dispatch: str = names.DISPATCH_CHAIN
    prefix: str = names.DOMAIN_CHAIN_PREFIX
    watched: tuple[str, ...] = ()  # more chains a rule of ours may be found in (and is dropped from)
    head: tuple[str, ...] = ()  # rule specs the dispatch chain starts with, written when it is (re)made

    def hook_chains(self, table: str) -> tuple[str, ...]:
        """The chains whose rules are read as hook rules: ours may stand there."""
        own = tuple(h.chain for h in self.hooks if h.table == table)
        return own + tuple(c for c in self.watched if c not in own)

    def chain(self, uuid: str) -> str:
        return names.domain_chain(uuid, self.prefix)


LAYOUT = Layout(ADD_ORDER, HOOK_RULES)
HOOKS = {table: LAYOUT.hook_chains(table) for table in TABLES}


@dataclass(frozen=True)
class Observed:
    """What one table holds of ours: its hook chains' rules, our dispatch chain, our chains."""

    hook_rules: tuple[str, ...]  # "-A PREROUTING ...", "-A OUTPUT ..." lines
    dispatch_rules: tuple[str, ...] | None  # None: no dispatch chain
    chains: frozenset[str] = frozenset()  # our domain chains (filled by full reads only)
    populated: frozenset[str] = frozenset()  # those of them holding rules (full reads only)


@dataclass(frozen=True)
class TableEdit:
    name: str
    reset_dispatch: bool = False
    drop: tuple[str, ...] = ()  # exact rule specs to delete ("CHAIN args")
    insert: tuple[HookRule, ...] = ()
    add_jumps: tuple[str, ...] = ()  # domain UUIDs
    delete_dispatch: bool = False
    head: tuple[str, ...] = ()  # written first into the dispatch chain (only where it is reset)


@dataclass(frozen=True)
class Transaction:
    tables: tuple[TableEdit, ...]
    plans: tuple[Plan, ...] = ()
    removed: tuple[str, ...] = field(default=())
    dispatch: str = names.DISPATCH_CHAIN
    prefix: str = names.DOMAIN_CHAIN_PREFIX


def render_change(
    uuid: str, plan: Plan | None, others: int, observed: dict[str, Observed], layout: Layout = LAYOUT
) -> str:
    """The transaction for one domain; pure (``observed`` is what observe_chains() read)."""
    chain = layout.chain(uuid)
    tables = []
    for table in layout.tables if plan else tuple(reversed(layout.tables)):
        seen = observed[table]
        own_jumps = [r for r in seen.dispatch_rules or () if _target(r) == chain]
        drop = [_spec(r) for r in own_jumps]
        if plan is None:
            last = others == 0 and seen.dispatch_rules is not None
            if last:  # the dispatch chain is emptied whole: only our hook rules need dropping
                drop = [_spec(r) for r in seen.hook_rules if _is_ours(r)]
            tables.append(TableEdit(table, reset_dispatch=last, drop=tuple(drop), delete_dispatch=last))
            continue
        hooks = [h for h in layout.hooks if h.table == table]
        wrong = [h for h in hooks if not _hook_rule_ok(h, seen.hook_rules)]
        redo = {h.chain for h in wrong}
        stale = [
            _spec(r)
            for r in seen.hook_rules
            if _is_ours(r) and (_chain(r) in redo or _chain(r) not in {h.chain for h in hooks})
        ]
        keep_jump = len(own_jumps) == 1
        tables.append(
            TableEdit(
                table,
                reset_dispatch=seen.dispatch_rules is None,
                drop=tuple(stale + ([] if keep_jump else drop)),
                insert=tuple(wrong),
                add_jumps=() if keep_jump else (uuid,),
                head=layout.head if seen.dispatch_rules is None else (),
            )
        )
    tx = _transaction(layout, tables, (plan,) if plan else (), () if plan else (chain,))
    return _render(tx)


def render_rebuild(plans: list[Plan], observed: dict[str, Observed], layout: Layout = LAYOUT) -> str:
    """All of our rules from scratch: dispatch emptied, every plan written, stale chains deleted."""
    wanted = {layout.chain(p.uuid) for p in plans}
    stale = sorted(frozenset().union(*(observed[t].chains for t in layout.tables)) - wanted)
    ours = {table: [_spec(r) for r in observed[table].hook_rules if _is_ours(r)] for table in layout.tables}
    if (
        not plans
        and not stale
        and not any(ours.values())
        and all(observed[t].dispatch_rules is None for t in layout.tables)
    ):
        return ""  # nothing of ours here: touch nothing (not even create empty tables)
    tables = [
        TableEdit(
            table,
            reset_dispatch=True,
            drop=tuple(ours[table]),
            insert=tuple(h for h in layout.hooks if h.table == table) if plans else (),
            add_jumps=tuple(p.uuid for p in plans),
            delete_dispatch=not plans,
            head=layout.head if plans else (),
        )
        for table in layout.tables
    ]
    return _render(_transaction(layout, tables, tuple(plans), tuple(stale)))


def render_removals(uuid: str, layout: Layout = LAYOUT) -> dict[str, str]:
    """The removal against the firewall as render_change() leaves it: our rules there, once."""
    chain = layout.chain(uuid)
    jump = f"-A {layout.dispatch} -m comment --comment {names.tag(uuid)} -j {chain}"
    after = {
        table: Observed(
            hook_rules=tuple(f"-A {h.chain} {h.spec}" for h in layout.hooks if h.table == table),
            dispatch_rules=(jump,),
        )
        for table in layout.tables
    }
    return {
        "other": render_change(uuid, None, 1, after, layout),
        "last": render_change(uuid, None, 0, after, layout),
    }


def _transaction(
    layout: Layout, tables: list[TableEdit], plans: tuple[Plan, ...], removed: tuple[str, ...]
) -> Transaction:
    return Transaction(tuple(tables), plans, removed, layout.dispatch, layout.prefix)


def _render(tx: Transaction) -> str:
    from ..render import render  # jinja2: only where a ruleset is rendered, not on every import

    return render("iptables.j2", cached=len(tx.plans) <= 1, tx=tx, mark=MARK)  # one domain, not a rebuild


def observed_chains(listings: dict[tuple[str, str], str | None]) -> dict[str, Observed]:
    """What a change reads: (table, chain) -> its ``iptables -S CHAIN`` listing (None: no such
    chain), for the hook chains and the dispatch chain of both tables."""
    observed = {}
    for table in TABLES:
        hook_rules = [r for chain in HOOKS[table] for r in _rules(listings.get((table, chain)) or "")]
        dispatch = listings.get((table, names.DISPATCH_CHAIN))
        observed[table] = Observed(
            hook_rules=tuple(hook_rules), dispatch_rules=tuple(_rules(dispatch)) if dispatch is not None else None
        )
    return observed


def observed_tables(xt: XtRuleset, layout: Layout = LAYOUT) -> dict[str, Observed]:
    """The layout's tables whole (sync, status): also the chains no dispatch rule points to."""
    observed = {}
    for table in layout.tables:
        chains = xt.chain_names(table)
        rules = [r for r in xt.rules if r.table == table]
        hook_chains = layout.hook_chains(table)
        observed[table] = Observed(
            hook_rules=tuple(r.line for r in rules if r.chain in hook_chains),
            dispatch_rules=tuple(r.line for r in rules if r.chain == layout.dispatch)
            if layout.dispatch in chains
            else None,
            chains=frozenset(c for c in chains if names.is_domain_chain(c, layout.prefix)),
            populated=frozenset(r.chain for r in rules if names.is_domain_chain(r.chain, layout.prefix)),
        )
    return observed


def live_chains(xt: XtRuleset, layout: Layout = LAYOUT) -> set[str]:
    """Domain chains (names) that packets reach: our hook rules right, dispatch -> chain, with rules."""
    live = []
    for table, seen in observed_tables(xt, layout).items():
        if not all(_hook_rule_ok(h, seen.hook_rules) for h in layout.hooks if h.table == table):
            return set()
        live.append({_target(r) for r in seen.dispatch_rules or ()} & seen.populated)
    return set.intersection(*live)


def findings(xt: XtRuleset, live: dict[str, str]) -> list[Finding]:
    """Our hook rules (present once, FORWARD's above libvirt's), FORWARD's policy and what comes
    before us there, then each live domain (uuid -> name): its chains reached, and its counters."""
    observed = observed_tables(xt)
    found: list[Finding] = []
    if not live:  # nothing needs our rules: only say what of ours is left
        ours = sorted({c for seen in observed.values() for c in seen.chains})
        return [firewall("rules.left", INFO, f"no domain live; chains of ours left: {', '.join(ours)}")] if ours else []
    for hook in HOOK_RULES:
        found.append(_hook_finding(hook, observed[hook.table].hook_rules))
    found += _forward_path(xt)
    reached = live_chains(xt)
    for uuid, name in sorted(live.items(), key=lambda item: item[1]):
        chain = names.domain_chain(uuid)
        missing = [t for t, seen in observed.items() if not _reaches(seen, chain)]
        if chain in reached:
            found.append(Finding("rules.domain", OK, name, f"its chain {chain} is reached in nat and filter"))
        elif missing:
            evidence = f"chain {chain}: not jumped to from {names.DISPATCH_CHAIN}, or empty, in {', '.join(missing)}"
            gone = "recorded live, but its rules are gone"
            found.append(Finding("rules.domain", FAIL, name, gone, evidence, SYNC_FIX))
        else:
            summary = "its chains are in place, but packets do not reach them (our hook rules, above)"
            found.append(Finding("rules.domain", FAIL, name, summary, "", SYNC_FIX))
        found += _counters(xt, name, chain)
    return found


def _reaches(seen: Observed, chain: str) -> bool:
    """The dispatch chain jumps to the domain's chain, and it holds rules."""
    return chain in seen.populated and chain in {_target(r) for r in seen.dispatch_rules or ()}


def _hook_finding(hook: HookRule, hook_rules: tuple[str, ...]) -> Finding:
    where = f"{hook.table} {hook.chain}"
    rules = [r for r in hook_rules if _chain(r) == hook.chain]
    ours = [i for i, r in enumerate(rules) if _is_ours(r)]
    if len(ours) != 1:
        what = "missing" if not ours else f"there {len(ours)} times"
        return firewall(
            "rules.hooks", FAIL, f"our rule in {where} is {what}", f"{len(rules)} rule(s) in {where}", SYNC_FIX
        )
    libvirt = [i for i, r in enumerate(rules) if _target(r).startswith(LIBVIRT_CHAIN_PREFIX)]
    if hook.chain == "FORWARD" and libvirt and ours[0] > min(libvirt):
        first = min(libvirt)
        evidence = f"{where}: ours is rule {ours[0] + 1}, libvirt's {_target(rules[first])} rule {first + 1}"
        return firewall("rules.order", FAIL, "our FORWARD jump is below libvirt's reject", evidence, SYNC_FIX)
    return firewall("rules.hooks", OK, f"our rule in {where} is in place")


def _forward_path(xt: XtRuleset) -> list[Finding]:
    """FORWARD's policy, and the jumps before ours (Docker's, ufw's): each sees the packet first."""
    forward = xt.chain("filter", "FORWARD")
    rules = xt.rules_of("filter", "FORWARD")
    ours = next((i for i, r in enumerate(rules) if r.comment == TAG), None)
    found = []
    if forward is not None and forward.policy == "DROP":
        if ours is None:
            evidence = f"filter FORWARD: policy DROP, {len(rules)} rule(s), none of ours"
            summary = "filter FORWARD drops (policy DROP) and our accept is gone"
            found.append(firewall("path.forward_policy", FAIL, summary, evidence, SYNC_FIX))
        else:
            found.append(
                firewall("path.forward_policy", INFO, "filter FORWARD's policy is DROP; our accept comes first")
            )
    before = [r for r in rules[: ours or 0] if r.target and not r.target.startswith(LIBVIRT_CHAIN_PREFIX)]
    if before:
        chains = ", ".join(r.target for r in before)
        evidence = "; ".join(r.line for r in before)
        found.append(
            firewall("path.before_us", WARN, f"filter FORWARD sends packets to {chains} before ours", evidence)
        )
    return found


def _counters(xt: XtRuleset, name: str, chain: str) -> list[Finding]:
    """Connections our DNAT translated and our accept let through (first packets: nat sees one
    per connection; filter counts every packet)."""
    nat = sum(r.packets for r in xt.rules_of("nat", chain) if r.target == "DNAT")
    accepted = sum(r.packets for r in xt.rules_of("filter", chain) if r.target == "ACCEPT")
    return [
        Finding("counters.translated", INFO, name, f"{nat} connection(s) translated by our DNAT"),
        Finding("counters.accepted", INFO, name, f"{accepted} packet(s) accepted by our FORWARD rules"),
    ]


def _hook_rule_ok(hook: HookRule, hook_rules: tuple[str, ...]) -> bool:
    """Exactly one rule of ours in the chain, and (FORWARD) above every libvirt jump."""
    rules = [r for r in hook_rules if _chain(r) == hook.chain]
    ours = [i for i, r in enumerate(rules) if _is_ours(r)]
    if len(ours) != 1:
        return False
    libvirt = [i for i, r in enumerate(rules) if _target(r).startswith(LIBVIRT_CHAIN_PREFIX)]
    return hook.chain != "FORWARD" or not libvirt or ours[0] < min(libvirt)


def _is_ours(rule: str) -> bool:
    """Tagged with the project's own comment (domain rules carry ``libvirt-portfwd:<uuid>``)."""
    words = shlex.split(rule)
    return any(a == "--comment" and b == TAG for a, b in itertools.pairwise(words))


def _rules(listing: str) -> list[str]:
    return [line for line in listing.splitlines() if line.startswith("-A ")]


def _chain(rule: str) -> str:
    return rule.split()[1]


def _target(rule: str) -> str:
    words = rule.split()
    return words[-1] if len(words) >= 2 and words[-2] in ("-j", "-g") else ""


def _spec(rule: str) -> str:
    """``-A CHAIN args`` as read back -> ``CHAIN args`` for a ``-D`` of exactly that rule."""
    return rule[len("-A ") :]


# For another Layout's reader (accept.py): what a rule read back is, in the same words.
hook_rule_ok, is_ours, target, chain_of = _hook_rule_ok, _is_ours, _target, _chain
