"""iptables backend: our own chains, one ``iptables-restore --noflush`` transaction per change.

nat:    PREROUTING -> PORTFWD -> PF<uuid in base32> (DNAT)
filter: FORWARD    -> PORTFWD -> PF<uuid in base32> (ACCEPT only what was DNATed to that guest port)

This module is what the hook's stop path needs (apply a prerendered transaction); reading
the firewall and rendering live in iptables_rules, imported when they are needed.
"""

from __future__ import annotations

from ..run import on_path, run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..model import Plan

RESTORE = ["iptables-restore", "--noflush", "--wait=10"]


class IptablesBackend:
    name = "iptables"

    def available(self) -> bool:
        return on_path(RESTORE[0])

    def change(self, plan: Plan, others: int, previous: str = "") -> str:
        """The domain's chain is rewritten whole, so ``previous`` is not needed."""
        from .iptables_rules import observe_chains, render_change

        return render_change(plan.uuid, plan, others, observe_chains())

    def removal(self, plan: Plan) -> dict[str, str]:
        """Against the firewall as change() just left it: our jumps in place, exactly once."""
        from .iptables_rules import render_removals

        return render_removals(plan.uuid)

    def bind(self, removal: str) -> str:
        """Prerendered whole: nothing to fill in."""
        return removal

    def rebuild(self, plans: list[Plan]) -> str:
        from .iptables_rules import observe_tables, render_rebuild

        return render_rebuild(plans, observe_tables())

    def apply(self, ruleset: str) -> None:
        if ruleset:
            run(RESTORE, stdin=ruleset)

    def live(self) -> set[str]:
        """Domains whose chains packets reach: hook -> dispatch -> chain, with rules, in both tables."""
        from .. import names
        from .iptables_rules import live_chains

        return {names.uuid_of_chain(chain) for chain in live_chains()}

    def owners(self) -> set[str]:
        from .. import names
        from .iptables_rules import observe_tables

        return {names.uuid_of_chain(c) for seen in observe_tables().values() for c in seen.chains}
