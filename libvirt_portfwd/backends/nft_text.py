"""nftables rule text that both the templates and plain Python write: each defined once here.

The hook's stop path writes the gate's deletion without jinja2 (``NftablesBackend.bind``); the
template writes the same line through the ``gate_deletion`` filter.
"""

from .. import names

GATE = f'ct mark & {names.CT_MARK:#010x} == {names.CT_MARK:#010x} ct status dnat counter accept comment "{names.tag()}"'


def gate_deletion(handle: int) -> str:
    """Delete one rule of ours from libvirt's guest_input, by its handle."""
    if isinstance(handle, bool) or not isinstance(handle, int) or handle <= 0:  # 0 would empty the chain
        raise ValueError(f"not a rule handle: {handle!r}")
    return f"delete rule ip {names.LIBVIRT_NFT_TABLE} {names.LIBVIRT_NFT_GATE_CHAIN} handle {handle}"


# A transaction that also writes our accept beside a neighbour's iptables-nft FORWARD drop
# (accept.py) is two texts in one string: iptables-nft-restore's, then nft's, each after a
# marker line that says which runs first. Adds and rebuilds write the accepts first (alone they
# match nothing: only connections our DNAT translated), removals take the DNAT away first. A
# ruleset without accepts has no marker: it is nft's text alone, byte for byte as before.
XT_FIRST = "#> libvirt-portfwd: iptables-nft-restore --noflush, then nft -f\n"
XT_LAST = "#> libvirt-portfwd: nft -f, then iptables-nft-restore --noflush\n"
NFT_PART = "#> libvirt-portfwd: nft -f\n"


def compose(xt: str, nft: str, xt_first: bool) -> str:
    """One ruleset of the two texts ("" for ``xt``: nft's text unchanged)."""
    if not xt:
        return nft
    return (XT_FIRST if xt_first else XT_LAST) + xt + NFT_PART + nft


def split(ruleset: str) -> tuple[str, str, bool]:
    """compose() reversed: (iptables-nft-restore's text, nft's text, whether the first runs first)."""
    for marker, first in ((XT_FIRST, True), (XT_LAST, False)):
        if ruleset.startswith(marker):
            xt, _, nft = ruleset[len(marker) :].partition(NFT_PART)
            return xt, nft, first
    return "", ruleset, True
