"""nftables backend, its firewall I/O: read our table, libvirt's chain and anyone's base chains
back (``nft -j``, parsed by nft_listing), and apply one ``nft -f`` transaction.

What to write and what the rules read back mean is nftables_rules' (pure): this module runs the
commands. The hook's stop path needs only ``bind`` and ``apply``: no renderer is imported there.

Beside a neighbour whose iptables-nft ``ip filter`` FORWARD drops (Docker, ufw), a transaction
also writes our accepts there (accept.py) with ``iptables-nft-restore``: read with
``iptables-nft-save -t filter`` only where nft shows that table, so a host without one pays one
small listing, run beside the gate's.
"""

from __future__ import annotations

from .. import names
from ..run import on_path, run, run_all

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..findings import Finding
    from ..model import Plan
    from . import nft_listing
    from .accept import Neighbour
    from .nftables_rules import Gate

NFT = ["nft", "-f", "-"]
GATE_LISTING = ["nft", "-j", "list", "chain", "ip", names.LIBVIRT_NFT_TABLE, names.LIBVIRT_NFT_GATE_CHAIN]
RULESET_LISTING = ["nft", "-j", "list", "ruleset"]
FORWARD_LISTING = ["nft", "-j", "list", "chain", "ip", "filter", "FORWARD"]  # iptables-nft's, if any
XT_SAVE = ["iptables-nft-save", "-t", "filter"]
XT_RESTORE = ["iptables-nft-restore", "--noflush", "--wait=10"]


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


def read_neighbour(present: bool) -> Neighbour:
    """iptables-nft's filter table, where nft shows it ``present``; else nothing to do there.
    Where it cannot be read (``iptables-nft-save`` missing or failing: iptables-nft replaced by
    another variant), as if there were none: our nft rules do not depend on it (doctor still
    names a foreign drop from nft's own listing)."""
    from ..errors import FirewallError
    from . import accept

    if not present or not on_path(XT_SAVE[0]):
        return accept.NONE
    from .xt_listing import parse_save

    try:
        return accept.neighbour_of(parse_save(run(XT_SAVE)))
    except FirewallError:
        return accept.NONE


class NftablesBackend:
    name = "nftables"

    def __init__(self) -> None:
        self._neighbour: Neighbour | None = None  # as the last change or rebuild read it

    def available(self) -> bool:
        return on_path("nft")

    def observe_neighbour(self, ruleset: nft_listing.Ruleset | None = None) -> Neighbour:
        """iptables-nft's filter table (``ruleset``: a listing that says whether it exists)."""
        if ruleset is None:
            [(code, _, _)] = run_all([FORWARD_LISTING])
            return read_neighbour(code == 0)
        return read_neighbour(("ip", "filter") in ruleset.tables)

    def observe_gate(self) -> Gate:
        """libvirt's guest_input chain (small: one rule per network and ours)."""
        from .nftables_rules import gate_of

        return gate_of(read(GATE_LISTING))

    def observe(self) -> nft_listing.Ruleset:
        """The whole ruleset: ours, libvirt's, and every other table's base chains (status, doctor)."""
        return read(RULESET_LISTING)

    def observe_for_change(self) -> tuple[Gate, Neighbour]:
        """What a change reads: libvirt's guest_input, and iptables-nft's filter table if any
        (the two small listings side by side; the table itself only where it exists)."""
        from . import nft_listing
        from .nftables_rules import gate_of

        [(code, out, _), (forward, _, _)] = run_all([GATE_LISTING, FORWARD_LISTING])
        try:
            gate = gate_of(nft_listing.parse(out) if code == 0 else nft_listing.EMPTY)
        except ValueError:
            gate = gate_of(nft_listing.EMPTY)
        self._neighbour = read_neighbour(forward == 0)
        return gate, self._neighbour

    def change(self, plan: Plan, others: int, previous: str = "") -> str:
        from .nftables_rules import render_change

        gate, neighbour = self.observe_for_change()
        return render_change(plan, gate, previous, neighbour)

    def removal(self, plan: Plan) -> dict[str, str]:
        """The last removal deletes the gate too: bind() adds its deletion, by the handles the
        firewall has at removal time. The accepts beside a neighbour's drop are removed as the
        change (or rebuild) just left them."""
        from .nftables_rules import render_removals

        neighbour = self._neighbour if self._neighbour is not None else self.observe_neighbour()
        return render_removals(plan, neighbour)

    def bind(self, removal: str, last: bool = False) -> str:
        """The last removal with the gate's deletion appended to nft's part (its handles read now)."""
        if not last:
            return removal
        from .nft_text import compose, gate_deletion, split

        xt, nft, first = split(removal)
        _, handles = gate_handles(read(GATE_LISTING))
        return compose(xt, nft + "".join(gate_deletion(handle) for handle in handles), first)

    def rebuild(self, plans: list[Plan]) -> str:
        from .nftables_rules import render_rebuild

        gate, neighbour = self.observe_for_change()
        return render_rebuild(plans, gate, neighbour)

    def apply(self, ruleset: str) -> None:
        """nft's transaction, and where the ruleset has them, our accepts in iptables-nft's table
        in the order it says (nft_text.compose). If the second fails, FirewallError: every
        caller then rebuilds all of our rules from the records, which undoes the first."""
        from .nft_text import split

        xt, nft, first = split(ruleset)
        steps = [(XT_RESTORE, xt), (NFT, nft)] if first else [(NFT, nft), (XT_RESTORE, xt)]
        for argv, text in steps:
            if text.strip():
                run(argv, stdin=text)

    def findings(self, live: dict[str, str]) -> list[Finding]:
        """What the ruleset says of our rules (and of the domains ``live``: uuid -> name)."""
        from .nftables_rules import findings

        ruleset = self.observe()
        return findings(ruleset, live, self.observe_neighbour(ruleset))

    def live(self) -> set[str]:
        """Reachable: our table and gate right, and beside a neighbour's FORWARD drop the
        domain's accepts reached; none while accepts of ours are left where nothing drops (so
        that a repair takes them away)."""
        from . import accept
        from .nftables_rules import live_uuids

        ruleset = self.observe()
        uuids = live_uuids(ruleset)
        neighbour = self.observe_neighbour(ruleset)
        if neighbour.drops:
            return uuids & accept.reached(neighbour)
        return set() if neighbour.ours else uuids

    def owners(self) -> set[str]:
        from . import accept
        from .nftables_rules import owner_uuids

        ruleset = self.observe()
        return owner_uuids(ruleset) | accept.owners(self.observe_neighbour(ruleset))
