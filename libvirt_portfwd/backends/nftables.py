"""nftables backend: our own table, maps for O(1) lookups, one ``nft -f`` transaction per change.

This module is what the hook's stop path needs (apply a prerendered transaction); reading
the firewall and rendering live in nftables_rules, imported when they are needed.
"""

from __future__ import annotations

from ..run import on_path, run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..model import Plan

NFT = ["nft", "-f", "-"]


class NftablesBackend:
    name = "nftables"

    def available(self) -> bool:
        return on_path("nft")

    def change(self, plan: Plan, others: int, previous: str = "") -> str:
        from .nftables_rules import observe_gate, render_change

        return render_change(plan, observe_gate(), previous)

    def removal(self, plan: Plan) -> dict[str, str]:
        """Only while other domains stay: the last removal also deletes the gate, by handle."""
        from .nftables_rules import render_removal

        return {"other": render_removal(plan, None, last=False)}

    def rebuild(self, plans: list[Plan]) -> str:
        from .nftables_rules import observe_gate, render_rebuild

        return render_rebuild(plans, observe_gate())

    def apply(self, ruleset: str) -> None:
        if ruleset.strip():
            run(NFT, stdin=ruleset)

    def live(self) -> set[str]:
        from .nftables_rules import live_uuids

        return live_uuids()
