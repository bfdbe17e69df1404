"""The nftables backend's accept beside a neighbour whose iptables-nft ``ip filter`` FORWARD drops
(pure): Docker's policy DROP, ufw's ``DEFAULT_FORWARD_POLICY="DROP"``, a plain ``-P FORWARD DROP``.

Every base chain on the forward hook must accept a packet; an accept in our table or in libvirt's
does not override that table's drop. So, only where such a drop exists, and only in the place
the neighbour documents for it: one jump of ours in Docker's ``DOCKER-USER`` where that chain
exists, else at the top of ``filter FORWARD`` (as the iptables backend does), to our chain
``PORTFWD_ACCEPT``, which jumps to one chain per domain (``PA<uuid in base32>``) holding exactly
the accepts the iptables backend writes for its filter part: the same renderer (iptables_rules,
with its own Layout) and the same template, so each rule's text exists once. Everything is
tagged like our other rules. Nothing is written where no ``ip filter`` FORWARD drops.

Read back from ``iptables-nft-save -t filter`` (xt_listing): the comments of iptables-nft's
rules are xt matches that ``nft -j`` does not show.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import names
from ..findings import FAIL, OK, SYNC_FIX, Finding, firewall
from ..model import Plan
from . import iptables_rules
from .iptables_rules import TAG, HookRule, Layout, Observed
from .xt_listing import XtRuleset

FORWARD, DOCKER_USER = "FORWARD", names.DOCKER_USER_CHAIN
NOTHING = Observed(hook_rules=(), dispatch_rules=None)
SPEC = f"-m comment --comment {TAG} -j {names.ACCEPT_CHAIN}"  # our one rule in the neighbour's chain
# The replies of the connections our DNAT translated (and marked) come back from the guest
# through the same FORWARD drop (Docker's accepts only docker0's): one rule for all of them,
# first in our chain. The accepts per forward are the iptables backend's; its replies pass
# libvirt's own iptables rules there.
REPLIES = (
    f"-m conntrack --ctstate DNAT --ctdir REPLY -m connmark --mark {iptables_rules.MARK}/{iptables_rules.MARK} "
    f"-m comment --comment {TAG} -j ACCEPT"
)


@dataclass(frozen=True)
class Neighbour:
    """What iptables-nft's filter table says: whether FORWARD drops, where our jump belongs
    (DOCKER-USER where Docker made it, else FORWARD), and what of ours is there."""

    drops: bool
    place: str = FORWARD
    observed: Observed = NOTHING
    docker_jumped: bool = False  # FORWARD jumps to DOCKER-USER (else our jump there is not reached)

    @property
    def ours(self) -> bool:
        """Anything of ours in the table (a jump, our chain, a domain's chain)."""
        seen = self.observed
        return seen.dispatch_rules is not None or bool(seen.chains) or any(_ours(r) for r in seen.hook_rules)

    @property
    def layout(self) -> Layout:
        return layout(self.place)


NONE = Neighbour(drops=False)


def layout(place: str) -> Layout:
    return Layout(
        ("filter",),
        (HookRule("filter", place, SPEC),),
        names.ACCEPT_CHAIN,
        names.ACCEPT_CHAIN_PREFIX,
        watched=(FORWARD, DOCKER_USER),
        head=(REPLIES,),
    )


def neighbour_of(xt: XtRuleset) -> Neighbour:
    """iptables-nft's filter table (``iptables-nft-save -t filter``) read."""
    forward = xt.chain("filter", FORWARD)
    place = DOCKER_USER if xt.chain("filter", DOCKER_USER) is not None else FORWARD
    observed = iptables_rules.observed_tables(xt, layout(place))["filter"]
    jumped = any(r.target == DOCKER_USER for r in xt.rules_of("filter", FORWARD))
    return Neighbour(forward is not None and forward.policy == "DROP", place, observed, jumped)


def render_change(plan: Plan, neighbour: Neighbour) -> str:
    """iptables-restore text making one domain's accepts exactly ``plan`` ("" where nothing is
    needed and nothing of ours is there). Where the neighbour's drop went, all of ours goes."""
    if not neighbour.drops:
        return render_rebuild([], neighbour)
    return iptables_rules.render_change(plan.uuid, plan, 0, {"filter": neighbour.observed}, neighbour.layout)


def render_removals(uuid: str, neighbour: Neighbour) -> dict[str, str]:
    """As render_change() leaves the table: nothing where it wrote nothing."""
    if not neighbour.drops:
        return {"other": "", "last": ""}
    return iptables_rules.render_removals(uuid, neighbour.layout)


def render_rebuild(plans: list[Plan], neighbour: Neighbour) -> str:
    """All of our accepts from scratch; none (and nothing of ours left) where nothing drops."""
    wanted = plans if neighbour.drops else []
    return iptables_rules.render_rebuild(wanted, {"filter": neighbour.observed}, neighbour.layout)


def reached(neighbour: Neighbour) -> set[str]:
    """Domains (UUIDs) whose accepts packets reach: our jump once in its place (and that place
    reached), our chain -> the domain's chain, with rules."""
    seen = neighbour.observed
    [hook] = neighbour.layout.hooks
    if not iptables_rules.hook_rule_ok(hook, seen.hook_rules):
        return set()
    if neighbour.place == DOCKER_USER and not neighbour.docker_jumped:
        return set()
    if not any(_ours(r) and iptables_rules.target(r) == "ACCEPT" for r in seen.dispatch_rules or ()):
        return set()  # the replies' accept
    targets = {iptables_rules.target(r) for r in seen.dispatch_rules or ()}
    return {names.uuid_of_chain(c) for c in targets & seen.populated}


def owners(neighbour: Neighbour) -> set[str]:
    return {names.uuid_of_chain(c) for c in neighbour.observed.chains}


def wrong(neighbour: Neighbour, uuids: set[str]) -> bool:
    """Whether the table is not as the domains ``uuids`` (recorded live) need: our accepts
    missing where FORWARD drops, or anything of ours left where it does not."""
    if not neighbour.drops:
        return neighbour.ours
    return bool(uuids - reached(neighbour))


def finding(neighbour: Neighbour, live: dict[str, str]) -> Finding | None:
    """doctor: the neighbour's FORWARD drop, fixed by us or not (None: it does not drop)."""
    if not neighbour.drops:
        return None
    place = f"{DOCKER_USER} (Docker's place for its users' rules)" if neighbour.place == DOCKER_USER else FORWARD
    where = "ip filter FORWARD"
    if not live:
        return firewall("path.foreign", OK, f"{where} drops (policy drop); no forward is live that it would drop")
    missing = {u: n for u, n in live.items() if u not in reached(neighbour)}
    if not missing:
        summary = f"{where} drops (policy drop); fixed by us: our {names.ACCEPT_CHAIN}, jumped from {place}"
        return firewall("path.foreign", OK, summary)
    seen = neighbour.observed
    hook_rules = [r for r in seen.hook_rules if _ours(r)]
    what = []
    if not any(iptables_rules.chain_of(r) == neighbour.place for r in hook_rules):
        what.append(f"our jump in {neighbour.place}")
    if neighbour.place == DOCKER_USER and not neighbour.docker_jumped:
        what.append(f"FORWARD's jump to {DOCKER_USER} (Docker's)")
    if seen.dispatch_rules is None:
        what.append(f"our chain {names.ACCEPT_CHAIN}")
    elif not any(_ours(r) and iptables_rules.target(r) == "ACCEPT" for r in seen.dispatch_rules):
        what.append(f"the replies' accept in {names.ACCEPT_CHAIN}")
    what += [f"{names.domain_chain(u, names.ACCEPT_CHAIN_PREFIX)} ({n})" for u, n in sorted(missing.items())]
    summary = f"{where} drops forwarded packets (policy drop), and our accept there is missing"
    evidence = f"{where}: policy drop; missing: {', '.join(what)}"
    return firewall("path.foreign_drop", FAIL, summary, evidence, SYNC_FIX)


def _ours(rule: str) -> bool:
    return iptables_rules.is_ours(rule)
