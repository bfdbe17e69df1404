"""iptables as read back: ``iptables-save [-c]`` parsed into chains (with policies) and rules.

Pure: text in, data out, for any table and anyone's rules (ours, libvirt's, Docker's, ufw's),
unit-tested from captured listings without root. A rule keeps its ``-A CHAIN args`` line exactly
as read (what a ``-D`` of exactly that rule needs), its target, its comment and its counters.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass

_COUNTERS = re.compile(r"^\[(\d+):(\d+)\]\s+")


@dataclass(frozen=True)
class XtChain:
    table: str
    name: str
    policy: str | None  # ACCEPT, DROP (built-in chains); None: a user chain


@dataclass(frozen=True)
class XtRule:
    table: str
    chain: str
    line: str  # "-A CHAIN args" as iptables-save wrote it, counters left out
    target: str  # what -j or -g names ("" for none)
    comment: str | None
    packets: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class XtRuleset:
    chains: tuple[XtChain, ...]
    rules: tuple[XtRule, ...]

    def chain(self, table: str, name: str) -> XtChain | None:
        return next((c for c in self.chains if (c.table, c.name) == (table, name)), None)

    def rules_of(self, table: str, chain: str) -> tuple[XtRule, ...]:
        return tuple(r for r in self.rules if (r.table, r.chain) == (table, chain))

    def chain_names(self, table: str) -> frozenset[str]:
        return frozenset(c.name for c in self.chains if c.table == table)


def parse_save(text: str) -> XtRuleset:
    """Every table in an ``iptables-save`` listing; lines it cannot read are skipped."""
    table = ""
    chains: list[XtChain] = []
    rules: list[XtRule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and table:
            words = line[1:].split()
            if words:
                policy = words[1] if len(words) > 1 and words[1] != "-" else None
                chains.append(XtChain(table, words[0], policy))
        elif table and (line.startswith("-A ") or _COUNTERS.match(line)):
            rule = _rule(table, line)
            if rule is not None:
                rules.append(rule)
    return XtRuleset(tuple(chains), tuple(rules))


def _rule(table: str, line: str) -> XtRule | None:
    packets = size = 0
    counters = _COUNTERS.match(line)
    if counters:
        packets, size = int(counters.group(1)), int(counters.group(2))
        line = line[counters.end() :]
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    if len(words) < 2 or words[0] != "-A":
        return None
    target = comment = None
    for flag, value in itertools.pairwise(words):
        if flag in ("-j", "-g", "--jump", "--goto"):
            target = value
        elif flag == "--comment":
            comment = value
    return XtRule(table, words[1], line, target or "", comment, packets, size)
