"""Base chains of other tables on the forwarded packet's path, and whether they would drop it.

Pure: an nftables ruleset read back (nft_listing) in, findings out. In nftables every base
chain of every table sees the packet at its hook and each must accept it: an accept in our
table or libvirt's does not override a ``policy drop`` in an admin's ``inet filter``, in
firewalld's tables, or in the ``ip filter`` table that iptables-nft writes for Docker or ufw.
Only the admin may change those tables, so a finding names the chain and the exact line that
lets our forwarded connections (and nothing else) through.

A chain drops the flow when its policy is drop, or when an unconditional drop or reject ends
it, unless a rule of that chain before the drop accepts connections by their DNAT status (the
line the fix prints). Rules it jumps to are not followed: where a chain's verdict depends on
them, the finding is a warning that says so.
"""

from __future__ import annotations

from .. import names
from ..backendnames import IPTABLES
from ..findings import FAIL, OK, WARN, Finding, firewall
from .nft_listing import Chain, Rule, Ruleset

OURS = {("ip", names.NFT_TABLE), ("ip", names.LIBVIRT_NFT_TABLE), ("ip6", names.LIBVIRT_NFT_TABLE)}  # and libvirt's
XT_TABLES = {("ip", t) for t in ("filter", "nat", "mangle", "raw", "security")}  # what iptables-nft writes
HOOKS = ("forward",)  # filter chains on the forwarded path (nat hooks do not drop)
MARK = f"{names.CT_MARK:#010x}"


def foreign_findings(ruleset: Ruleset, backend: str, bridges: tuple[str, ...] = ("virbr0",)) -> list[Finding]:
    """Every foreign base chain on the forwarded path; ``backend``: ours (under iptables the
    iptables-nft tables are our own rules' view, judged from iptables-save instead)."""
    found = []
    for chain in sorted((c for h in HOOKS for c in ruleset.base_chains(h)), key=lambda c: (c.family, c.table)):
        key = (chain.family, chain.table)
        if key in OURS or (backend == IPTABLES and key in XT_TABLES):
            continue
        found.append(_judge(chain, ruleset.rules_of(chain.family, chain.table, chain.name), backend, bridges))
    if not found:
        found.append(firewall("path.foreign", OK, "no other table's chain filters forwarded packets"))
    return found


def _judge(chain: Chain, rules: tuple[Rule, ...], backend: str, bridges: tuple[str, ...]) -> Finding:
    where = f"{chain.family} {chain.table} {chain.name}"
    accept = next((i for i, r in enumerate(rules) if r.verdict == "accept" and (r.ct_dnat or r.unconditional)), None)
    ender = next((i for i, r in enumerate(rules) if r.verdict in ("drop", "reject") and r.unconditional), None)
    drops = chain.policy == "drop" or ender is not None
    before = len(rules) if ender is None else ender
    if accept is not None and accept < before:
        summary = f"{where} accepts our forwarded connections (rule handle {rules[accept].handle})"
        return firewall("path.foreign", OK, summary)
    jumps = [r.target for r in rules[:before] if r.verdict in ("jump", "goto") and r.target]
    if not drops:
        summary = f"{where} (hook {chain.hook}, priority {chain.priority}) lets what it does not match pass"
        return firewall("path.foreign", OK, summary)
    why = f"policy {chain.policy}" if chain.policy == "drop" else f"rule handle {rules[before].handle} drops everything"
    evidence = f"{where}: hook {chain.hook}, priority {chain.priority}, {why}; no rule accepts DNATed connections"
    if jumps:
        evidence += f" (unless a chain it jumps to does: {', '.join(sorted(set(jumps)))})"
    severity = WARN if jumps else FAIL
    line = fix(chain, backend, bridges)
    return firewall("path.foreign_drop", severity, f"{where} drops forwarded packets", evidence, line)


def fix(chain: Chain, backend: str, bridges: tuple[str, ...]) -> str:
    """The one line an admin adds so that only our forwarded connections pass ``chain``.

    Under our nftables backend our DNAT sets a conntrack mark bit, and the line matches it; under
    iptables it matches DNATed connections going into libvirt's bridges."""
    xt = (chain.family, chain.table) in XT_TABLES and chain.name.isupper()  # iptables-nft's own chains
    if xt:
        match = f"-m connmark --mark {MARK}/{MARK}" if backend != IPTABLES else _xt_bridges(bridges)
        return f"iptables -I {chain.name} -m conntrack --ctstate DNAT {match} -j ACCEPT"
    match = f"ct mark & {MARK} == {MARK}" if backend != IPTABLES else f"oifname {_nft_set(bridges)}"
    return f"nft insert rule {chain.family} {chain.table} {chain.name} {match} ct status dnat accept"


def _xt_bridges(bridges: tuple[str, ...]) -> str:
    more = f"   (and once more per bridge: {', '.join(bridges[1:])})" if len(bridges) > 1 else ""
    return f"-o {bridges[0]}{more}"


def _nft_set(bridges: tuple[str, ...]) -> str:
    return f'"{bridges[0]}"' if len(bridges) == 1 else "{ " + ", ".join(f'"{b}"' for b in bridges) + " }"
