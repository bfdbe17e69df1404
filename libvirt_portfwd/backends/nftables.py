"""nftables backend, its firewall I/O: read our table, libvirt's chain and anyone's base chains
back (``nft -j``, parsed by nft_listing), and apply one ``nft -f`` transaction.

What to write and what the rules read back mean is nftables_rules' (pure): this module runs the
commands. The hook's stop path needs only ``bind`` and ``apply``: no renderer is imported there.
"""

from __future__ import annotations

from .. import names
from ..run import on_path, run, run_all

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..findings import Finding
    from ..model import Plan
    from . import nft_listing
    from .nftables_rules import Gate

NFT = ["nft", "-f", "-"]
GATE_LISTING = ["nft", "-j", "list", "chain", "ip", names.LIBVIRT_NFT_TABLE, names.LIBVIRT_NFT_GATE_CHAIN]
RULESET_LISTING = ["nft", "-j", "list", "ruleset"]


def read(argv: list[str]) -> nft_listing.Ruleset:
    """A listing parsed; an object that does not exist (nft exits non-zero) reads as empty."""
    from . import nft_listing  # here: json and the parser only where a listing is read, not on import

    [(code, out, _)] = run_all([argv])
    if code != 0:
        return nft_listing.EMPTY
    try:
        return nft_listing.parse(out)
    except ValueError:
        return nft_listing.EMPTY


def gate_handles(ruleset: nft_listing.Ruleset) -> tuple[bool, tuple[int, ...]]:
    """libvirt's guest_input in a listing: (it exists, the handles of our rules in it)."""
    table, chain = names.LIBVIRT_NFT_TABLE, names.LIBVIRT_NFT_GATE_CHAIN
    if ruleset.chain("ip", table, chain) is None:
        return False, ()
    return True, tuple(r.handle for r in ruleset.rules_of("ip", table, chain) if r.comment == names.tag())


class NftablesBackend:
    name = "nftables"

    def available(self) -> bool:
        return on_path("nft")

    def observe_gate(self) -> Gate:
        """libvirt's guest_input chain (small: one rule per network and ours)."""
        from .nftables_rules import gate_of

        return gate_of(read(GATE_LISTING))

    def observe(self) -> nft_listing.Ruleset:
        """The whole ruleset: ours, libvirt's, and every other table's base chains (status, doctor)."""
        return read(RULESET_LISTING)

    def change(self, plan: Plan, others: int, previous: str = "") -> str:
        from .nftables_rules import render_change

        return render_change(plan, self.observe_gate(), previous)

    def removal(self, plan: Plan) -> dict[str, str]:
        """The last removal deletes the gate too: bind() adds its deletion, by the handles the
        firewall has at removal time."""
        from .nftables_rules import render_removal

        return {"other": render_removal(plan, None, last=False), "last": render_removal(plan, None, last=True)}

    def bind(self, removal: str, last: bool = False) -> str:
        """The last removal with the gate's deletion appended (its handles read now)."""
        if not last:
            return removal
        from .nft_text import gate_deletion

        _, handles = gate_handles(read(GATE_LISTING))
        return removal + "".join(gate_deletion(handle) for handle in handles)

    def rebuild(self, plans: list[Plan]) -> str:
        from .nftables_rules import render_rebuild

        return render_rebuild(plans, self.observe_gate())

    def apply(self, ruleset: str) -> None:
        if ruleset.strip():
            run(NFT, stdin=ruleset)

    def findings(self, live: dict[str, str]) -> list[Finding]:
        """What the ruleset says of our rules (and of the domains ``live``: uuid -> name)."""
        from .nftables_rules import findings

        return findings(self.observe(), live)

    def live(self) -> set[str]:
        from .nftables_rules import live_uuids

        return live_uuids(self.observe())

    def owners(self) -> set[str]:
        from .nftables_rules import owner_uuids

        return owner_uuids(self.observe())
