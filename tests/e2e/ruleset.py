"""The lab host's firewall as comparable lines, in both of libvirt's firewall backends.

One line per rule, chain, map element or set element, with no counters and no handles, so that
two snapshots compare with ``==`` and a failure message reads like the ruleset:

    filter -A FORWARD -j PORTFWD                                  (iptables-save, per table)
    nft ip libvirt_network guest_input: oif "virbr0" counter reject
    nft ip libvirt_portfwd dnat_tcp element 203.0.113.1 . 2080 comment "libvirt-portfwd:…" : 192.168.122.5 . 80

Only the tables libvirt and we write are read from nftables (iptables-nft's own tables are the
iptables-save part already).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

NFT_TABLES = (("ip", "libvirt_network"), ("ip6", "libvirt_network"), ("ip", "libvirt_portfwd"))
OUR_TABLE = "nft ip libvirt_portfwd "
GATE_CHAIN = "nft ip libvirt_network guest_input: "
OURS = re.compile(r"PORTFWD|libvirt-portfwd|\bPF[A-Z2-7]{26}\b|^nft ip libvirt_portfwd ")
TAG = re.compile(r"libvirt-portfwd:([0-9a-f-]{36})")
_IPT_COUNTERS = re.compile(r" \[\d+:\d+\]$")
_NFT_COUNTERS = re.compile(r"counter packets \d+ bytes \d+")
_BLOCK = re.compile(r"^(chain|map|set) (\S+) \{$")
_IPT_DNAT = re.compile(r"--to-destination (\S+)")
_NFT_DNAT_ELEMENT = re.compile(r" dnat_\w+ element .* : ([\d.]+) \. (\d+)$")
_JUMP = 'jump forwards comment "libvirt-portfwd"'
_NFT_DNAT_RULE = re.compile(r" dnat ip to ([\d.]+:\d+)")


def iptables_lines(save: str) -> list[str]:
    """``iptables-save`` output as ``TABLE LINE`` (chain declarations and rules)."""
    lines, table = [], ""
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith((":", "-A")):
            lines.append(f"{table} {_IPT_COUNTERS.sub('', line)}")
    return lines


def nft_lines(listing: str, family: str, table: str) -> list[str]:
    """``nft list table FAMILY TABLE`` output as one line per chain, rule and element."""
    prefix = f"nft {family} {table} "
    lines: list[str] = []
    block: tuple[str, str] | None = None
    elements = ""  # an `elements = { ... }` list being collected (it may span lines)
    for raw in listing.splitlines():
        line = _NFT_COUNTERS.sub("counter", raw.strip())
        if elements:
            elements += " " + line
        elif not line or line.startswith("table ") or line == "}":
            block = None if line == "}" else block
            continue
        elif match := _BLOCK.match(line):
            block = (match.group(1), match.group(2))
            lines.append(f"{prefix}{block[0]} {block[1]}")
            continue
        elif block is None:
            continue
        elif block[0] == "chain":
            kind = "hook" if line.startswith("type ") else ""
            lines.append(f"{prefix}{block[1]}: {kind + ' ' if kind else ''}{line}")
            continue
        elif line.startswith("elements = {"):
            elements = line
        else:
            lines.append(f"{prefix}{block[1]} {line}")  # a map's or set's type and flags
            continue
        if elements.endswith("}") and block is not None:
            body = elements[elements.index("{") + 1 : elements.rindex("}")]
            lines += [f"{prefix}{block[1]} element {item.strip()}" for item in body.split(",") if item.strip()]
            elements = ""
    return lines


def ours(lines: Iterable[str]) -> list[str]:
    """Our chains, rules and elements in either backend, and our gate in libvirt's table."""
    return [line for line in lines if OURS.search(line)]


def libvirt(lines: Iterable[str]) -> list[str]:
    """libvirt's own chains and rules (iptables LIBVIRT_*, its nftables tables), none of ours."""
    return [line for line in lines if ("LIBVIRT_" in line or " libvirt_network " in line) and not OURS.search(line)]


def duplicates(lines: Iterable[str]) -> list[str]:
    """Rules or elements present more than once (chain declarations may repeat per family)."""
    counted = Counter(line for line in lines if " -A " in line or ": " in line or " element " in line)
    return [line for line, count in counted.items() if count > 1]


def uuids(lines: Iterable[str]) -> set[str]:
    """The domains our rules and elements are tagged with."""
    return {match.group(1) for line in lines for match in TAG.finditer(line)}


def dnat_targets(lines: Iterable[str]) -> list[str]:
    """Every ``address:port`` our rules DNAT to, sorted (iptables rules, nft maps and rules)."""
    targets = []
    for line in lines:
        if line.startswith("nft "):
            element = _NFT_DNAT_ELEMENT.search(line)
            if element:
                targets.append(f"{element.group(1)}:{element.group(2)}")
            elif rule := _NFT_DNAT_RULE.search(line):
                targets.append(rule.group(1))
        elif "-j DNAT" in line and (match := _IPT_DNAT.search(line)):
            targets.append(match.group(1))
    return sorted(targets)


def accept_order_problems(lines: list[str], backend: str) -> list[str]:
    """Why our accept would not let a forward through (empty: exactly one, ahead of libvirt's).

    iptables: one jump to PORTFWD in nat PREROUTING and in filter FORWARD, the latter above
    every LIBVIRT_* jump. nftables: one gate rule, first in libvirt's guest_input, and our two
    hook chains' jumps."""
    if backend == "iptables":
        prerouting = [line for line in lines if line.startswith("nat -A PREROUTING ") and line.endswith("-j PORTFWD")]
        forward = [line for line in lines if line.startswith("filter -A FORWARD ")]
        jumps = [i for i, line in enumerate(forward) if line.endswith("-j PORTFWD")]
        theirs = [i for i, line in enumerate(forward) if "-j LIBVIRT_" in line]
        problems = [] if len(prerouting) == 1 else [f"jumps to PORTFWD in nat PREROUTING: {prerouting}"]
        if len(jumps) != 1:
            problems.append(f"jumps to PORTFWD in filter FORWARD: {forward}")
        elif theirs and jumps[0] > min(theirs):
            problems.append(f"our FORWARD jump is below libvirt's: {forward}")
        return problems
    guest_input = [line for line in lines if line.startswith(GATE_CHAIN) and ": hook " not in line]
    gates = [i for i, line in enumerate(guest_input) if OURS.search(line)]
    nft_jumps = [
        line
        for line in lines
        if line.startswith(OUR_TABLE) and line.endswith('jump forwards comment "libvirt-portfwd"')
    ]
    problems = [] if gates == [0] else [f"our gate is not (only) first in libvirt's guest_input: {guest_input}"]
    if len(nft_jumps) != 2:
        problems.append(f"jumps to our forwards chain (prerouting, output): {nft_jumps}")
    return problems
