"""iptables backend, its rules: what a change reads, and the transaction it renders.

nat:    PREROUTING -> PORTFWD -> PF<uuid in base32> (DNAT)
filter: FORWARD    -> PORTFWD -> PF<uuid in base32> (ACCEPT only what was DNATed to that guest port)

Our FORWARD jump must stand above libvirt's LIBVIRT_FW* jumps, whose reject would shadow it.
A change reads only the chains it depends on (iptables -S per chain costs the same however
big the ruleset is) and writes one domain chain, so its cost does not grow with other VMs.
"""

from dataclasses import dataclass, field

from .. import names
from ..errors import FirewallError
from ..model import Plan
from ..run import run, run_all

HOOKS = {"nat": "PREROUTING", "filter": "FORWARD"}
LIBVIRT_CHAIN_PREFIX = "LIBVIRT_"
TOP_JUMP = f"-m comment --comment {names.tag()} -j {names.DISPATCH_CHAIN}"  # as the template writes it


@dataclass(frozen=True)
class Observed:
    """What one table holds of ours: the hook chain's rules, our dispatch chain, our chains."""

    hook_rules: tuple[str, ...]  # "-A FORWARD ..." lines
    dispatch_rules: tuple[str, ...] | None  # None: no dispatch chain
    chains: frozenset[str] = frozenset()  # our domain chains (filled by full reads only)
    populated: frozenset[str] = frozenset()  # those of them holding rules (full reads only)


@dataclass(frozen=True)
class TableEdit:
    name: str
    hook: str
    reset_dispatch: bool = False
    drop: tuple[str, ...] = ()
    insert_top_jump: bool = False
    add_jumps: tuple[str, ...] = ()
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
    for table, hook in HOOKS.items():
        seen = observed[table]
        own_jumps = [r for r in seen.dispatch_rules or () if _jumps_to(r, chain)]
        drop = [_spec(r) for r in own_jumps]
        if plan is None:
            last = others == 0 and seen.dispatch_rules is not None
            if last:
                drop = [_spec(r) for r in _top_jumps(seen.hook_rules)]
            tables.append(TableEdit(table, hook, reset_dispatch=last, drop=tuple(drop), delete_dispatch=last))
            continue
        fix_top = not _top_jump_ok(table, seen.hook_rules)
        keep_jump = len(own_jumps) == 1
        tables.append(
            TableEdit(
                table,
                hook,
                reset_dispatch=seen.dispatch_rules is None,
                drop=tuple(
                    ([_spec(r) for r in _top_jumps(seen.hook_rules)] if fix_top else []) + ([] if keep_jump else drop)
                ),
                insert_top_jump=fix_top,
                add_jumps=() if keep_jump else (uuid,),
            )
        )
    tx = Transaction(tables=tuple(tables), plans=(plan,) if plan else (), removed=() if plan else (chain,))
    return _render(tx)


def render_rebuild(plans: list[Plan], observed: dict[str, Observed]) -> str:
    """All of our rules from scratch: dispatch emptied, every plan written, stale chains deleted."""
    wanted = {names.domain_chain(p.uuid) for p in plans}
    stale = sorted((observed["nat"].chains | observed["filter"].chains) - wanted)
    if (
        not plans
        and not stale
        and not any(seen.dispatch_rules is not None or _top_jumps(seen.hook_rules) for seen in observed.values())
    ):
        return ""  # nothing of ours here: touch nothing (not even create empty tables)
    tables = []
    for table, hook in HOOKS.items():
        last = not plans
        tables.append(
            TableEdit(
                table,
                hook,
                reset_dispatch=True,
                drop=tuple(_spec(r) for r in _top_jumps(observed[table].hook_rules)),
                insert_top_jump=not last,
                add_jumps=tuple(p.uuid for p in plans),
                delete_dispatch=last,
            )
        )
    return _render(Transaction(tables=tuple(tables), plans=tuple(plans), removed=tuple(stale)))


def _render(tx: Transaction) -> str:
    from ..render import render  # jinja2: only where a ruleset is rendered, not on every import

    return render("iptables.j2", tx=tx)


def observe_chains() -> dict[str, Observed]:
    """Read the hook and dispatch chains of both tables (four ``iptables -S``, side by side)."""
    argvs = []
    for table, hook in HOOKS.items():
        argvs += [
            ["iptables", "-w", "-t", table, "-S", hook],
            ["iptables", "-w", "-t", table, "-S", names.DISPATCH_CHAIN],
        ]
    results = run_all(argvs)
    observed = {}
    for i, table in enumerate(HOOKS):
        (hook_rc, hook_out, hook_err), (dispatch_rc, dispatch_out, _) = results[2 * i], results[2 * i + 1]
        if hook_rc != 0:
            raise FirewallError(argvs[2 * i], hook_rc, hook_err)
        observed[table] = Observed(
            hook_rules=tuple(_rules(hook_out)),
            dispatch_rules=tuple(_rules(dispatch_out)) if dispatch_rc == 0 else None,
        )
    return observed


def observe_tables() -> dict[str, Observed]:
    """Read both tables whole (sync, status): also finds chains no dispatch rule points to."""
    observed = {}
    for table, hook in HOOKS.items():
        out = run(["iptables-save", "-t", table])
        chains = {line[1:].split()[0] for line in out.splitlines() if line.startswith(":")}
        rules = [line for line in out.splitlines() if line.startswith("-A ")]
        observed[table] = Observed(
            hook_rules=tuple(r for r in rules if r.split()[1] == hook),
            dispatch_rules=tuple(r for r in rules if r.split()[1] == names.DISPATCH_CHAIN)
            if names.DISPATCH_CHAIN in chains
            else None,
            chains=frozenset(c for c in chains if names.is_domain_chain(c)),
            populated=frozenset(r.split()[1] for r in rules if names.is_domain_chain(r.split()[1])),
        )
    return observed


def _top_jump_ok(table: str, hook_rules: tuple[str, ...]) -> bool:
    """Exactly one jump to our dispatch chain, and (filter) above every libvirt jump."""
    ours = [i for i, r in enumerate(hook_rules) if _jumps_to(r, names.DISPATCH_CHAIN)]
    if len(ours) != 1:
        return False
    libvirt = [i for i, r in enumerate(hook_rules) if _target(r).startswith(LIBVIRT_CHAIN_PREFIX)]
    return table != "filter" or not libvirt or ours[0] < min(libvirt)


def _top_jumps(hook_rules: tuple[str, ...]) -> list[str]:
    return [r for r in hook_rules if _jumps_to(r, names.DISPATCH_CHAIN)]


def _rules(listing: str) -> list[str]:
    return [line for line in listing.splitlines() if line.startswith("-A ")]


def _jumps_to(rule: str, chain: str) -> bool:
    return _target(rule) == chain


def _target(rule: str) -> str:
    words = rule.split()
    return words[-1] if len(words) >= 2 and words[-2] in ("-j", "-g") else ""


def _spec(rule: str) -> str:
    """``-A CHAIN args`` as read back -> ``CHAIN args`` for a ``-D`` of exactly that rule."""
    return rule[len("-A ") :]


def live_chains() -> set[str]:
    """Domain chains (names) that packets reach: hook -> dispatch -> chain, with rules, in both tables."""
    live = []
    for table, seen in observe_tables().items():
        if not _top_jump_ok(table, seen.hook_rules):
            return set()
        live.append({_target(r) for r in seen.dispatch_rules or ()} & seen.populated)
    return set.intersection(*live)


def render_removals(uuid: str) -> dict[str, str]:
    """The removal against the firewall as render_change() leaves it: our jumps there, once."""
    chain = names.domain_chain(uuid)
    jump = f"-A {names.DISPATCH_CHAIN} -m comment --comment {names.tag(uuid)} -j {chain}"
    after = {
        table: Observed(hook_rules=(f"-A {hook} {TOP_JUMP}",), dispatch_rules=(jump,)) for table, hook in HOOKS.items()
    }
    return {"other": render_change(uuid, None, 1, after), "last": render_change(uuid, None, 0, after)}
