"""The firewall hops of a forward's path, as findings: our rules (the backend reads them back)
and every other table's base chain the forwarded packet passes (backends/foreign.py).

I/O: it reads the firewall (``iptables-save -c``, ``nft -j list ruleset``); what the listings
mean is decided by the pure modules. Reads only, changes nothing. doctor's checks of these hops
are in pathchecks.py.
"""

from __future__ import annotations

from .backends import choose_backend
from .backends.foreign import foreign_findings
from .backends.nftables import NftablesBackend
from .errors import PortfwdError
from .findings import FAIL, OK, Finding, firewall


def firewall_findings(
    backend_name: str, network_dir: str, live: dict[str, str], bridges: tuple[str, ...]
) -> list[Finding]:
    """``live``: uuid -> name of the domains recorded live; ``bridges``: where their guests are."""
    try:
        backend, reason = choose_backend(backend_name, network_dir)
    except PortfwdError as exc:
        return [firewall("rules.backend", FAIL, "no backend of ours can run here", str(exc), "set backend: in config")]
    found = [firewall("rules.backend", OK, f"backend {backend.name} ({reason})"), *backend.findings(live)]
    nft = NftablesBackend()
    if nft.available():
        ruleset = nft.observe()
        # under our nftables backend, iptables-nft's FORWARD drop is ours to fix (accept.py)
        neighbour = nft.observe_neighbour(ruleset) if backend.name == nft.name else None
        found += foreign_findings(ruleset, backend.name, bridges or ("virbr0",), neighbour, live)
    return found
