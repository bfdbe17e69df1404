"""nftables backend: our own table, maps for O(1) lookups, one ``nft -f`` transaction per change.

This module is what the hook's stop path needs (apply a prerendered transaction); reading
the firewall and rendering live in nftables_rules, imported when they are needed.
"""

from __future__ import annotations

from .. import names
from ..run import on_path, run, run_all

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..model import Plan

NFT = ["nft", "-f", "-"]
GATE_LISTING = ["nft", "-a", "list", "chain", "ip", names.LIBVIRT_NFT_TABLE, names.LIBVIRT_NFT_GATE_CHAIN]
# In the prerendered last removal this stands for the gate's handles, which only the firewall at
# removal time knows (bind() puts them in). Not a number: left in, nft refuses the transaction
# whole (handle 0 would be worse than wrong: the kernel deletes every rule of the chain).
GATE_STANDIN = "GATE-HANDLE"
_DROP_GATE = f"delete rule ip {names.LIBVIRT_NFT_TABLE} {names.LIBVIRT_NFT_GATE_CHAIN} handle "


def read_gate() -> tuple[bool, bool, tuple[int, ...]]:
    """libvirt's guest_input now: (it exists, our gate alone and first, our rules' handles)."""
    [(code, out, _)] = run_all([GATE_LISTING])
    if code != 0:
        return False, True, ()
    rules = [line.strip() for line in out.splitlines() if "# handle " in line and not line.strip().startswith("chain")]
    ours = [i for i, rule in enumerate(rules) if f'comment "{names.tag()}"' in rule]
    return True, ours == [0], tuple(int(rules[i].rsplit("# handle ", 1)[1]) for i in ours)


class NftablesBackend:
    name = "nftables"

    def available(self) -> bool:
        return on_path("nft")

    def change(self, plan: Plan, others: int, previous: str = "") -> str:
        from .nftables_rules import observe_gate, render_change

        return render_change(plan, observe_gate(), previous)

    def removal(self, plan: Plan) -> dict[str, str]:
        """The last removal also deletes the gate, by handles bind() fills in at removal time."""
        from .nftables_rules import Gate, render_removal

        standin = Gate(present=True, ok=True, handles=(GATE_STANDIN,))
        return {"other": render_removal(plan, None, last=False), "last": render_removal(plan, standin, last=True)}

    def bind(self, removal: str) -> str:
        standin = f"{_DROP_GATE}{GATE_STANDIN}\n"
        if standin not in removal:
            return removal
        present, _, handles = read_gate()
        return removal.replace(standin, "".join(f"{_DROP_GATE}{h}\n" for h in handles) if present else "")

    def rebuild(self, plans: list[Plan]) -> str:
        from .nftables_rules import observe_gate, render_rebuild

        return render_rebuild(plans, observe_gate())

    def apply(self, ruleset: str) -> None:
        if ruleset.strip():
            run(NFT, stdin=ruleset)

    def live(self) -> set[str]:
        from .nftables_rules import live_uuids

        return live_uuids()

    def owners(self) -> set[str]:
        from .nftables_rules import owner_uuids

        return owner_uuids()
