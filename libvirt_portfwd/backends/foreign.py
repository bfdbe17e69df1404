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
them, the finding is a warning that says so. Except:

- iptables-nft's ``ip filter`` FORWARD under our nftables backend, when it drops (Docker, ufw):
  there we write our accept ourselves (accept.py), so the finding says whether it is in place
  (fixed by us) or missing (a FAIL, fixed by ``sync``);
- firewalld's own table (``inet firewalld``), which drops DNATed connections it did not make
  itself only under ``StrictForwardPorts=yes``: a FAIL whose fix is firewalld's setting, never a
  line into firewalld's table (firewalld owns it and refuses edits);
- ip6 tables are skipped: our forwards are IPv4 only.

And on the input hook: a foreign chain that drops what the guests send libvirt's dnsmasq on the
bridge (DHCP, DNS; ufw's INPUT under libvirt's nftables firewall, which writes no input rules)
keeps them from a lease, so no forward can go live: a FAIL naming the admin's lines (ufw's own
where ufw runs). Leases are libvirt's: we never open that ourselves.
"""

from __future__ import annotations

from .. import names
from ..backendnames import IPTABLES
from ..findings import FAIL, OK, WARN, Finding, firewall
from .nft_listing import Chain, Rule, Ruleset

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .accept import Neighbour

OURS = {("ip", names.NFT_TABLE), ("ip", names.LIBVIRT_NFT_TABLE), ("ip6", names.LIBVIRT_NFT_TABLE)}  # and libvirt's
XT_TABLES = {("ip", t) for t in ("filter", "nat", "mangle", "raw", "security")}  # what iptables-nft writes
HOOKS = ("forward",)  # filter chains on the forwarded path (nat hooks do not drop)
MARK = f"{names.CT_MARK:#010x}"
FIREWALLD = ("inet", "firewalld")
FIREWALLD_FIX = (
    "# firewalld's StrictForwardPorts=yes drops forwarded connections it did not DNAT itself (ours too);\n"
    "# only its admin may allow them (firewalld owns its table, and a reload would drop any line added there):\n"
    "sed -i 's/^StrictForwardPorts=.*/StrictForwardPorts=no/' /etc/firewalld/firewalld.conf\n"
    "firewall-cmd --reload"
)
GUEST_SERVICES = (("udp", 67), ("udp", 53), ("tcp", 53))  # what guests ask libvirt's dnsmasq for


def foreign_findings(
    ruleset: Ruleset,
    backend: str,
    bridges: tuple[str, ...] = ("virbr0",),
    neighbour: Neighbour | None = None,
    live: dict[str, str] | None = None,
) -> list[Finding]:
    """Every foreign base chain on the forwarded path; ``backend``: ours (under iptables the
    iptables-nft tables are our own rules' view, judged from iptables-save instead).
    ``neighbour``: iptables-nft's filter table as our nftables backend read it (accept.py), and
    ``live`` the domains recorded live (uuid -> name) whose accepts it must hold."""
    from . import accept

    found = []
    for chain in sorted((c for h in HOOKS for c in ruleset.base_chains(h)), key=lambda c: (c.family, c.table)):
        key = (chain.family, chain.table)
        if key in OURS or chain.family == "ip6" or (backend == IPTABLES and key in XT_TABLES):
            continue
        if neighbour is not None and (key, chain.name) == (("ip", "filter"), "FORWARD"):
            ours = accept.finding(neighbour, live or {})
            if ours is not None:
                found.append(ours)
                continue
        found.append(_judge(chain, ruleset.rules_of(chain.family, chain.table, chain.name), backend, bridges))
    if not found:
        found.append(firewall("path.foreign", OK, "no other table's chain filters forwarded packets"))
    return found + input_findings(ruleset, backend, bridges)


def input_findings(ruleset: Ruleset, backend: str, bridges: tuple[str, ...] = ("virbr0",)) -> list[Finding]:
    """Foreign base chains on the input hook that drop the guests' DHCP or DNS on the bridge."""
    found = []
    for chain in sorted(ruleset.base_chains("input"), key=lambda c: (c.family, c.table)):
        key = (chain.family, chain.table)
        if key in OURS or chain.family not in ("ip", "inet") or (backend == IPTABLES and key in XT_TABLES):
            continue
        rules = ruleset.rules_of(chain.family, chain.table, chain.name)
        ender = next((i for i, r in enumerate(rules) if r.verdict in ("drop", "reject") and r.unconditional), None)
        if chain.policy != "drop" and ender is None:
            continue
        before = rules if ender is None else rules[:ender]
        missing = [(p, port) for p, port in GUEST_SERVICES if not _lets_in(ruleset, chain, before, port, set())]
        if not missing:
            continue
        where = f"{chain.family} {chain.table} {chain.name}"
        what = ", ".join(f"{p} {port}" for p, port in missing)
        ufw = any(c.name.startswith("ufw-") for c in ruleset.chains if (c.family, c.table) == key)
        summary = f"{where} drops what guests ask libvirt's dnsmasq for on {', '.join(bridges)} ({what}): no lease"
        evidence = f"{where}: hook input, {'policy drop' if ender is None else 'a final drop'}; nothing accepts {what}"
        evidence += " (ufw's chains)" if ufw else ""
        found.append(firewall("path.foreign_input", FAIL, summary, evidence, _input_fix(chain, bridges, missing, ufw)))
    return found


def _lets_in(ruleset: Ruleset, chain: Chain, rules: tuple[Rule, ...], port: int, seen: set[str]) -> bool:
    """A rule accepts a new packet to ``port`` from a guest (following jumps within the table):
    unconditional, or matching the port (and at most the input interface and protocol). An
    accept of a whole interface is not recognised (its name is not read): a false alarm there."""
    plain = {"meta iifname", "meta iif", "meta l4proto", "ip protocol", "udp dport", "tcp dport", "th dport"}
    for rule in rules:
        ported = rule.matches <= plain and rule.matches_dport(port)
        if rule.verdict == "accept" and (rule.unconditional or ported):
            return True
        if rule.verdict in ("jump", "goto") and rule.target and rule.target not in seen:
            seen.add(rule.target)
            if _lets_in(ruleset, chain, ruleset.rules_of(chain.family, chain.table, rule.target), port, seen):
                return True
    return False


def _input_fix(chain: Chain, bridges: tuple[str, ...], missing: list[tuple[str, int]], ufw: bool) -> str:
    head = "# libvirt's dnsmasq serves the guests' leases and DNS; only the admin may let them in:\n"
    if ufw:
        lines = [f"ufw allow in on {b} to any port {port} proto {p}" for b in bridges for p, port in missing]
    else:
        where = f"{chain.family} {chain.table} {chain.name}"
        lines = [f"nft insert rule {where} iifname {_nft_set(bridges)} {p} dport {port} accept" for p, port in missing]
    return head + "\n".join(lines)


def _judge(chain: Chain, rules: tuple[Rule, ...], backend: str, bridges: tuple[str, ...]) -> Finding:
    where = f"{chain.family} {chain.table} {chain.name}"
    ender = next((i for i, r in enumerate(rules) if r.verdict in ("drop", "reject") and r.unconditional), None)
    drops = chain.policy == "drop" or ender is not None
    before = len(rules) if ender is None else ender
    accept = _accepts_dnat(rules[:before])
    if accept is not None:
        summary = f"{where} accepts our forwarded connections (rule handle {accept.handle})"
        return firewall("path.foreign", OK, summary)
    jumps = [r.target for r in rules[:before] if r.verdict in ("jump", "goto") and r.target]
    if not drops:
        summary = f"{where} (hook {chain.hook}, priority {chain.priority}) lets what it does not match pass"
        return firewall("path.foreign", OK, summary)
    why = f"policy {chain.policy}" if chain.policy == "drop" else f"rule handle {rules[before].handle} drops everything"
    evidence = f"{where}: hook {chain.hook}, priority {chain.priority}, {why}; no rule accepts DNATed connections"
    if jumps:
        evidence += f" (unless a chain it jumps to does: {', '.join(sorted(set(jumps)))})"
    if (chain.family, chain.table) == FIREWALLD:
        return firewall("path.foreign_drop", FAIL, f"{where} drops forwarded packets", evidence, FIREWALLD_FIX)
    severity = WARN if jumps else FAIL
    line = fix(chain, backend, bridges)
    return firewall("path.foreign_drop", severity, f"{where} drops forwarded packets", evidence, line)


INTERFACES = frozenset({"meta iifname", "meta oifname", "meta iif", "meta oif"})


def _accepts_dnat(rules: tuple[Rule, ...]) -> Rule | None:
    """The rule that lets both directions of DNATed connections pass: one accept of ``ct status
    dnat`` (or of everything) not tied to an interface, or one into and one out of an interface
    (the two lines ``fix`` prints under libvirt's iptables backend); None if there is none."""
    dnat = [r for r in rules if r.verdict == "accept" and (r.ct_dnat or r.unconditional)]
    either = next((r for r in dnat if not r.matches & INTERFACES), None)
    if either is not None:
        return either
    into = next((r for r in dnat if r.matches & {"meta oifname", "meta oif"}), None)
    back = next((r for r in dnat if r.matches & {"meta iifname", "meta iif"}), None)
    return into if into is not None and back is not None else None


def fix(chain: Chain, backend: str, bridges: tuple[str, ...]) -> str:
    """The lines an admin adds so that only our forwarded connections pass ``chain``, both ways.

    Under our nftables backend our DNAT sets a conntrack mark bit on the connection, and one line
    matches it; under iptables two lines match DNATed connections going into libvirt's bridges and
    their replies coming out of them. An nft table of the admin's: the same in its file too."""
    xt = (chain.family, chain.table) in XT_TABLES and chain.name.isupper()  # iptables-nft's own chains
    if xt:
        if backend != IPTABLES:
            return f"iptables -I {chain.name} -m conntrack --ctstate DNAT -m connmark --mark {MARK}/{MARK} -j ACCEPT"
        return "\n".join(
            f"iptables -I {chain.name} -m conntrack --ctstate DNAT {way} {_xt_bridges(bridges)} -j ACCEPT"
            for way in ("-o", "-i")
        )
    where = f"{chain.family} {chain.table} {chain.name}"
    if backend != IPTABLES:
        lines = [f"nft insert rule {where} ct mark & {MARK} == {MARK} ct status dnat accept"]
    else:
        lines = [
            f"nft insert rule {where} {way} {_nft_set(bridges)} ct status dnat accept" for way in ("oifname", "iifname")
        ]
    persist = (
        f"# and the same rule(s) in /etc/nftables.conf (table {chain.family} {chain.table}, "
        f"chain {chain.name}), so that they outlive a restart"
    )
    return "\n".join([*lines, persist])


def _xt_bridges(bridges: tuple[str, ...]) -> str:
    more = f"   (and once more per bridge: {', '.join(bridges[1:])})" if len(bridges) > 1 else ""
    return f"{bridges[0]}{more}"


def _nft_set(bridges: tuple[str, ...]) -> str:
    return f'"{bridges[0]}"' if len(bridges) == 1 else "{ " + ", ".join(f'"{b}"' for b in bridges) + " }"
