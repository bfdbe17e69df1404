"""iptables backend: our own chains, one ``iptables-restore --noflush`` transaction per change.

nat:    PREROUTING -> PORTFWD -> PF<uuid in base32> (DNAT)
filter: FORWARD    -> PORTFWD -> PF<uuid in base32> (ACCEPT only what was DNATed to that guest port)

This module is what the hook's stop path needs (apply a prerendered transaction); reading
the firewall and rendering live in iptables_rules, imported when they are needed.
"""

from __future__ import annotations

import os

from ..run import ENV, run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..model import Plan

RESTORE = ["iptables-restore", "--noflush", "--wait=10"]


class IptablesBackend:
    name = "iptables"

    def available(self) -> bool:
        return any(os.access(os.path.join(d, RESTORE[0]), os.X_OK) for d in ENV["PATH"].split(":") if d)

    def change(self, uuid: str, plan: Plan | None, others: int) -> str:
        from .iptables_rules import observe_chains, render_change

        return render_change(uuid, plan, others, observe_chains())

    def removal(self, uuid: str) -> dict[str, str]:
        """Against the firewall as change() just left it: our jumps in place, exactly once."""
        from .. import names
        from .iptables_rules import HOOKS, TOP_JUMP, Observed, render_change

        chain = names.domain_chain(uuid)
        jump = f"-A {names.DISPATCH_CHAIN} -m comment --comment {names.tag(uuid)} -j {chain}"
        after = {
            table: Observed(hook_rules=(f"-A {hook} {TOP_JUMP}",), dispatch_rules=(jump,))
            for table, hook in HOOKS.items()
        }
        return {"other": render_change(uuid, None, 1, after), "last": render_change(uuid, None, 0, after)}

    def rebuild(self, plans: list[Plan]) -> str:
        from .iptables_rules import observe_tables, render_rebuild

        return render_rebuild(plans, observe_tables())

    def apply(self, ruleset: str) -> None:
        if ruleset:
            run(RESTORE, stdin=ruleset)

    def live_chains(self) -> set[str]:
        """Domain chains that packets reach: hook -> dispatch -> chain, with rules, in both tables."""
        from .iptables_rules import live_chains

        return live_chains()
