"""iptables backend, its firewall I/O: our own chains read back (``iptables -S`` per chain for a
change, ``iptables-save -c`` whole for status and doctor, parsed by xt_listing), and one
``iptables-restore --noflush`` transaction per change.

nat:    PREROUTING -> PORTFWD -> PF<uuid in base32> (DNAT)
filter: FORWARD    -> PORTFWD -> PF<uuid in base32> (ACCEPT only what was DNATed to that guest port)

What to write and what the rules read back mean is iptables_rules' (pure). The hook's stop
path needs only ``bind`` and ``apply``: no renderer is imported there.
"""

from __future__ import annotations

from .. import names
from ..errors import FirewallError
from ..run import on_path, run, run_all

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..findings import Finding
    from ..model import Plan
    from .iptables_rules import Observed
    from .xt_listing import XtRuleset

RESTORE = ["iptables-restore", "--noflush", "--wait=10"]
TABLES = ("nat", "filter")


class IptablesBackend:
    name = "iptables"

    def available(self) -> bool:
        return on_path(RESTORE[0])

    def observe_chains(self) -> dict[str, Observed]:
        """What a change reads: our hook chains and dispatch chains (``iptables -S`` per chain,
        side by side: its cost does not grow with other VMs' rules)."""
        from .iptables_rules import HOOK_RULES, observed_chains

        wanted = [(h.table, h.chain) for h in HOOK_RULES] + [(t, names.DISPATCH_CHAIN) for t in TABLES]
        results = run_all([["iptables", "-w", "-t", table, "-S", chain] for table, chain in wanted])
        listings: dict[tuple[str, str], str | None] = {}
        for (table, chain), (code, out, err) in zip(wanted, results, strict=True):
            if code != 0 and chain != names.DISPATCH_CHAIN:  # a built-in chain is always there
                raise FirewallError(["iptables", "-w", "-t", table, "-S", chain], code, err)
            listings[(table, chain)] = out if code == 0 else None
        return observed_chains(listings)

    def observe(self) -> XtRuleset:
        """Both tables whole, with counters (sync, status, doctor)."""
        from .xt_listing import parse_save

        return parse_save("".join(run(["iptables-save", "-c", "-t", table]) for table in TABLES))

    def change(self, plan: Plan, others: int, previous: str = "") -> str:
        """The domain's chain is rewritten whole, so ``previous`` is not needed."""
        from .iptables_rules import render_change

        return render_change(plan.uuid, plan, others, self.observe_chains())

    def removal(self, plan: Plan) -> dict[str, str]:
        """Against the firewall as change() just left it: our jumps in place, exactly once."""
        from .iptables_rules import render_removals

        return render_removals(plan.uuid)

    def bind(self, removal: str, last: bool = False) -> str:
        """Prerendered whole: nothing to add at removal time."""
        return removal

    def rebuild(self, plans: list[Plan]) -> str:
        from .iptables_rules import observed_tables, render_rebuild

        return render_rebuild(plans, observed_tables(self.observe()))

    def apply(self, ruleset: str) -> None:
        if ruleset:
            run(RESTORE, stdin=ruleset)

    def findings(self, live: dict[str, str]) -> list[Finding]:
        """What the tables say of our rules (and of the domains ``live``: uuid -> name)."""
        from .iptables_rules import findings

        return findings(self.observe(), live)

    def live(self) -> set[str]:
        """Domains whose chains packets reach: hook -> dispatch -> chain, with rules, in both tables."""
        from .iptables_rules import live_chains

        return {names.uuid_of_chain(chain) for chain in live_chains(self.observe())}

    def owners(self) -> set[str]:
        from .iptables_rules import observed_tables

        return {names.uuid_of_chain(c) for seen in observed_tables(self.observe()).values() for c in seen.chains}
