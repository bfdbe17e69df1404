"""nftables as read back: ``nft -j list ...`` parsed into tables, chains, rules and set elements.

Pure: text in, data out, for any ruleset (ours, libvirt's, anyone's), so that what a backend or
``doctor`` concludes is computed from structured observations and unit-tested from captured
listings without root. Nothing is recognised by counting lines or matching rendered text: a rule
of ours is one whose comment is our tag; a rule's verdict, the sets and maps it looks up, its
counter and whether it matches connections by their DNAT status are read from its expressions.

A listing that is not nft's JSON is a ValueError saying so (the caller names the command).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

VERDICTS = ("accept", "drop", "reject", "return", "queue", "continue")


@dataclass(frozen=True)
class Chain:
    family: str
    table: str
    name: str
    handle: int
    hook: str | None = None  # None: a regular chain (reached only by jumps)
    type: str | None = None  # filter, nat, route
    priority: int | None = None
    policy: str | None = None  # accept, drop (base chains)

    @property
    def base(self) -> bool:
        return self.hook is not None


@dataclass(frozen=True)
class Rule:
    family: str
    table: str
    chain: str
    handle: int
    comment: str | None
    verdict: str | None  # accept, drop, reject, return, jump, goto, vmap, ... None: none (continues)
    target: str | None  # the chain of a jump or goto
    refs: frozenset[str]  # named sets and maps it looks up ("@dnat_tcp")
    statements: frozenset[str]  # the expression kinds it has: match, counter, dnat, masquerade, mangle ...
    counter: tuple[int, int] | None  # (packets, bytes), if it counts
    ct_dnat: bool  # it matches ``ct status dnat`` (only connections some DNAT translated)
    dports: frozenset[tuple[int, int]] = frozenset()  # destination port ranges it matches (tcp, udp, th)
    matches: frozenset[str] = frozenset()  # what its matches look at: "meta iifname", "udp dport", "ct state" ...

    def matches_dport(self, port: int) -> bool:
        return any(low <= port <= high for low, high in self.dports)

    @property
    def unconditional(self) -> bool:
        """No match at all: its verdict applies to every packet that reaches it."""
        return not {"match", "xt"} & self.statements and not self.refs  # xt: an iptables-nft match nft cannot show


@dataclass(frozen=True)
class Element:
    family: str
    table: str
    set: str
    comment: str | None


@dataclass(frozen=True)
class Ruleset:
    tables: frozenset[tuple[str, str]]  # (family, name)
    chains: tuple[Chain, ...]
    rules: tuple[Rule, ...]
    elements: tuple[Element, ...]

    def chain(self, family: str, table: str, name: str) -> Chain | None:
        return next((c for c in self.chains if (c.family, c.table, c.name) == (family, table, name)), None)

    def rules_of(self, family: str, table: str, chain: str) -> tuple[Rule, ...]:
        """A chain's rules in order."""
        return tuple(r for r in self.rules if (r.family, r.table, r.chain) == (family, table, chain))

    def base_chains(self, hook: str) -> tuple[Chain, ...]:
        return tuple(c for c in self.chains if c.hook == hook)

    def tagged(self, family: str, table: str, prefix: str) -> set[str]:
        """What follows ``prefix`` in every comment of the table's rules and elements."""
        comments = [r.comment for r in self.rules if (r.family, r.table) == (family, table)]
        comments += [e.comment for e in self.elements if (e.family, e.table) == (family, table)]
        return {c[len(prefix) :] for c in comments if c is not None and c.startswith(prefix)}


EMPTY = Ruleset(frozenset(), (), (), ())


def parse(text: str) -> Ruleset:
    """``nft -j list ruleset`` (or ``list table``, ``list chain``) -> Ruleset."""
    try:
        document = json.loads(text) if text.strip() else {"nftables": []}
    except ValueError as exc:
        raise ValueError(f"not nft's JSON: {exc}") from None
    objects = document.get("nftables") if isinstance(document, dict) else None
    if not isinstance(objects, list):
        raise ValueError("not nft's JSON: no top-level 'nftables' list")
    tables: set[tuple[str, str]] = set()
    chains: list[Chain] = []
    rules: list[Rule] = []
    elements: list[Element] = []
    for item in objects:
        if not isinstance(item, dict) or len(item) != 1:
            continue
        [(kind, body)] = item.items()
        if not isinstance(body, dict):
            continue
        family, table = _text(body.get("family")), _text(body.get("table" if kind != "table" else "name"))
        if kind == "table":
            tables.add((family, table))
        elif kind == "chain":
            chains.append(_chain(body, family, table))
        elif kind == "rule":
            rules.append(_rule(body, family, table))
        elif kind in ("set", "map"):
            elements += _elements(body, family, table)
    return Ruleset(frozenset(tables), tuple(chains), tuple(rules), tuple(elements))


def _chain(body: dict[str, Any], family: str, table: str) -> Chain:
    hook = body.get("hook")
    priority = body.get("prio")
    return Chain(
        family,
        table,
        _text(body.get("name")),
        _int(body.get("handle")),
        hook=hook if isinstance(hook, str) else None,
        type=body["type"] if isinstance(body.get("type"), str) else None,
        priority=priority if isinstance(priority, int) else None,
        policy=body["policy"] if isinstance(body.get("policy"), str) else None,
    )


def _rule(body: dict[str, Any], family: str, table: str) -> Rule:
    exprs = [e for e in _list(body.get("expr")) if isinstance(e, dict)]
    verdict: str | None = None
    target: str | None = None
    statements: set[str] = set()
    counter: tuple[int, int] | None = None
    for expr in exprs:
        for key, value in expr.items():
            statements.add(key)
            if key in VERDICTS:
                verdict = key
            elif key in ("jump", "goto"):
                verdict, target = key, _text(value.get("target")) if isinstance(value, dict) else ""
            elif key == "vmap":
                verdict = "vmap"
            elif key == "counter" and isinstance(value, dict):
                counter = (_int(value.get("packets")), _int(value.get("bytes")))
    comment = body.get("comment")
    return Rule(
        family,
        table,
        _text(body.get("chain")),
        _int(body.get("handle")),
        comment if isinstance(comment, str) else None,
        verdict,
        target,
        frozenset(s for s in _strings(exprs) if s.startswith("@")),
        frozenset(statements),
        counter,
        any(_is_ct_dnat(e["match"]) for e in exprs if isinstance(e.get("match"), dict)),
        frozenset(p for e in exprs if isinstance(e.get("match"), dict) for p in _dports(e["match"])),
        frozenset(k for e in exprs if isinstance(e.get("match"), dict) for k in [_match_key(e["match"])] if k),
    )


def _match_key(match: dict[str, Any]) -> str:
    """``meta iifname``, ``udp dport``, ``ct state``: what the match's left side looks at."""
    left = match.get("left")
    if not isinstance(left, dict) or len(left) != 1:
        return ""
    [(kind, body)] = left.items()
    if not isinstance(body, dict):
        return str(kind)
    if kind == "payload":
        return f"{_text(body.get('protocol'))} {_text(body.get('field'))}"
    return f"{kind} {_text(body.get('key'))}"


def _dports(match: dict[str, Any]) -> Iterator[tuple[int, int]]:
    """The destination port ranges a match accepts (a value v is (v, v))."""
    left, right = match.get("left"), match.get("right")
    payload = left.get("payload") if isinstance(left, dict) else None
    if not (isinstance(payload, dict) and payload.get("field") == "dport") or match.get("op", "==") not in ("==", "in"):
        return
    values = right.get("set") if isinstance(right, dict) and "set" in right else [right]
    for value in _list(values):
        if isinstance(value, int) and not isinstance(value, bool):
            yield value, value
        elif isinstance(value, dict) and isinstance(value.get("range"), list) and len(value["range"]) == 2:
            low, high = (_int(v) for v in value["range"])
            yield low, high


def _is_ct_dnat(match: dict[str, Any]) -> bool:
    left, right = match.get("left"), match.get("right")
    ct = left.get("ct") if isinstance(left, dict) else None
    if not (isinstance(ct, dict) and ct.get("key") == "status"):
        return False
    return right == "dnat" or (isinstance(right, list) and "dnat" in right)


def _elements(body: dict[str, Any], family: str, table: str) -> list[Element]:
    name = _text(body.get("name"))
    found = []
    for elem in _list(body.get("elem")):
        key = elem[0] if isinstance(elem, list) and elem else elem  # a map's element: [key, value]
        inner = key.get("elem") if isinstance(key, dict) else None
        comment = inner.get("comment") if isinstance(inner, dict) else None
        found.append(Element(family, table, name, comment if isinstance(comment, str) else None))
    return found


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
