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
