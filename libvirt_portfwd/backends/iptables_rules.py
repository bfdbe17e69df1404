"""iptables backend, its rules: what a change reads, and the transaction it renders.

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
from functools import cache

from .. import names
from ..errors import FirewallError
from ..model import Plan
from ..run import run, run_all

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
HOOKS = {table: tuple(h.chain for h in HOOK_RULES if h.table == table) for table in TABLES}


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


@dataclass(frozen=True)
class Transaction:
    tables: tuple[TableEdit, ...]
    plans: tuple[Plan, ...] = ()
    removed: tuple[str, ...] = field(default=())


def render_change(uuid: str, plan: Plan | None, others: int, observed: dict[str, Observed]) -> str:
    """The transaction for one domain; pure (``observed`` is what observe_chains() read)."""
    chain = names.domain_chain(uuid)
    tables = []
    for table in ADD_ORDER if plan else REMOVE_ORDER:
        seen = observed[table]
        own_jumps = [r for r in seen.dispatch_rules or () if _target(r) == chain]
        drop = [_spec(r) for r in own_jumps]
        if plan is None:
            last = others == 0 and seen.dispatch_rules is not None
            if last:  # the dispatch chain is emptied whole: only our hook rules need dropping
                drop = [_spec(r) for r in seen.hook_rules if _is_ours(r)]
            tables.append(TableEdit(table, reset_dispatch=last, drop=tuple(drop), delete_dispatch=last))
            continue
        wrong = [h for h in HOOK_RULES if h.table == table and not _hook_rule_ok(h, seen.hook_rules)]
        stale = [_spec(r) for r in seen.hook_rules if _is_ours(r) and _chain(r) in {h.chain for h in wrong}]
        keep_jump = len(own_jumps) == 1
        tables.append(
            TableEdit(
                table,
                reset_dispatch=seen.dispatch_rules is None,
                drop=tuple(stale + ([] if keep_jump else drop)),
                insert=tuple(wrong),
                add_jumps=() if keep_jump else (uuid,),
            )
        )
    tx = Transaction(tables=tuple(tables), plans=(plan,) if plan else (), removed=() if plan else (chain,))
    return _render(tx)


def render_rebuild(plans: list[Plan], observed: dict[str, Observed]) -> str:
    """All of our rules from scratch: dispatch emptied, every plan written, stale chains deleted."""
    wanted = {names.domain_chain(p.uuid) for p in plans}
    stale = sorted((observed["nat"].chains | observed["filter"].chains) - wanted)
    ours = {table: [_spec(r) for r in observed[table].hook_rules if _is_ours(r)] for table in TABLES}
    if not plans and not stale and not any(ours.values()) and all(o.dispatch_rules is None for o in observed.values()):
        return ""  # nothing of ours here: touch nothing (not even create empty tables)
    tables = [
        TableEdit(
            table,
            reset_dispatch=True,
            drop=tuple(ours[table]),
            insert=tuple(h for h in HOOK_RULES if h.table == table) if plans else (),
            add_jumps=tuple(p.uuid for p in plans),
            delete_dispatch=not plans,
        )
        for table in ADD_ORDER
    ]
    return _render(Transaction(tables=tuple(tables), plans=tuple(plans), removed=tuple(stale)))


def render_removals(uuid: str) -> dict[str, str]:
    """The removal against the firewall as render_change() leaves it: our rules there, once.

    It depends on nothing but the UUID, so it is rendered once for a stand-in UUID and the
    UUID-derived names are put in (sync prerenders it for every running domain).
    """
    pattern = _removal_pattern()
    chain, tag = names.domain_chain(uuid), names.tag(uuid)
    return {k: v.replace(STANDIN_CHAIN, chain).replace(STANDIN_TAG, tag) for k, v in pattern.items()}


STANDIN = "00000000-0000-4000-8000-000000000000"
STANDIN_CHAIN = names.domain_chain(STANDIN)
STANDIN_TAG = names.tag(STANDIN)


@cache
def _removal_pattern() -> dict[str, str]:
    return _render_removals(STANDIN)


def _render_removals(uuid: str) -> dict[str, str]:
    chain = names.domain_chain(uuid)
    jump = f"-A {names.DISPATCH_CHAIN} -m comment --comment {names.tag(uuid)} -j {chain}"
    after = {
        table: Observed(
            hook_rules=tuple(f"-A {h.chain} {h.spec}" for h in HOOK_RULES if h.table == table), dispatch_rules=(jump,)
        )
        for table in TABLES
    }
    return {"other": render_change(uuid, None, 1, after), "last": render_change(uuid, None, 0, after)}


def _render(tx: Transaction) -> str:
    from ..render import render  # jinja2: only where a ruleset is rendered, not on every import

    return render("iptables.j2", cached=len(tx.plans) <= 1, tx=tx, mark=MARK)  # one domain, not a rebuild


def observe_chains() -> dict[str, Observed]:
    """Read our hook chains and dispatch chains (``iptables -S`` per chain, side by side)."""
    argvs = [["iptables", "-w", "-t", h.table, "-S", h.chain] for h in HOOK_RULES]
    argvs += [["iptables", "-w", "-t", table, "-S", names.DISPATCH_CHAIN] for table in TABLES]
    results = run_all(argvs)
    for argv, (code, _, err) in zip(argvs[: len(HOOK_RULES)], results[: len(HOOK_RULES)], strict=True):
        if code != 0:
            raise FirewallError(argv, code, err)
    observed = {}
    for i, table in enumerate(TABLES):
        dispatch_code, dispatch_out, _ = results[len(HOOK_RULES) + i]
        hook_out = "".join(out for h, (_, out, _) in zip(HOOK_RULES, results, strict=False) if h.table == table)
        observed[table] = Observed(
            hook_rules=tuple(_rules(hook_out)),
            dispatch_rules=tuple(_rules(dispatch_out)) if dispatch_code == 0 else None,
        )
    return observed


def observe_tables() -> dict[str, Observed]:
    """Read both tables whole (sync, status): also finds chains no dispatch rule points to."""
    observed = {}
    for table in TABLES:
        out = run(["iptables-save", "-t", table])
        chains = {line[1:].split()[0] for line in out.splitlines() if line.startswith(":")}
        rules = [line for line in out.splitlines() if line.startswith("-A ")]
        observed[table] = Observed(
            hook_rules=tuple(r for r in rules if _chain(r) in HOOKS[table]),
            dispatch_rules=tuple(r for r in rules if _chain(r) == names.DISPATCH_CHAIN)
            if names.DISPATCH_CHAIN in chains
            else None,
            chains=frozenset(c for c in chains if names.is_domain_chain(c)),
            populated=frozenset(_chain(r) for r in rules if names.is_domain_chain(_chain(r))),
        )
    return observed


def live_chains() -> set[str]:
    """Domain chains (names) that packets reach: our hook rules right, dispatch -> chain, with rules."""
    live = []
    for table, seen in observe_tables().items():
        if not all(_hook_rule_ok(h, seen.hook_rules) for h in HOOK_RULES if h.table == table):
            return set()
        live.append({_target(r) for r in seen.dispatch_rules or ()} & seen.populated)
    return set.intersection(*live)


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
