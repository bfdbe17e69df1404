"""The firewall read back, without root: listings captured from real namespaces
(tests/data/listings: our rules applied next to libvirt's, then a fault seeded; iptables-save -c
and nft -j from this machine's iptables 1.8.9 and nft 1.0.6) parsed into data, and what the
backends and the path check conclude from them."""

import json
import random
from pathlib import Path

import pytest

from libvirt_portfwd import names
from libvirt_portfwd.backends import iptables_rules, nftables_rules
from libvirt_portfwd.backends.foreign import foreign_findings
from libvirt_portfwd.backends.nft_listing import parse
from libvirt_portfwd.backends.xt_listing import parse_save
from libvirt_portfwd.findings import FAIL, OK, Finding

LISTINGS = Path(__file__).parent.parent / "data" / "listings"
WEB1 = "6f1d0c9a-6a3b-4c55-9a3e-2f0b6f6a1c01"
LIVE = {WEB1: "web1"}


def xt(name: str):  # type: ignore[no-untyped-def]
    return parse_save((LISTINGS / f"{name}.iptables-save").read_text())


def nft(name: str):  # type: ignore[no-untyped-def]
    return parse((LISTINGS / f"{name}.nft.json").read_text())


def failed(found: list[Finding]) -> list[str]:
    return sorted(f.id for f in found if f.severity == FAIL)


# --- iptables-save -c ------------------------------------------------------------------------------


def test_iptables_save_parses_chains_policies_counters_comments_and_targets() -> None:
    ruleset = xt("iptables-live")
    forward = ruleset.chain("filter", "FORWARD")
    assert forward is not None and forward.policy == "ACCEPT"
    assert ruleset.chain("filter", "PORTFWD") is not None and ruleset.chain("filter", "PORTFWD").policy is None  # type: ignore[union-attr]
    first = ruleset.rules_of("filter", "FORWARD")[0]
    assert (first.target, first.comment) == ("PORTFWD", "libvirt-portfwd")
    assert first.line == "-A FORWARD -m comment --comment libvirt-portfwd -j PORTFWD"
    assert first.packets > 0 and first.bytes > 0
    dnat = [r for r in ruleset.rules_of("nat", names.domain_chain(WEB1)) if r.target == "DNAT"]
    assert {r.comment for r in dnat} == {names.tag(WEB1)} and sum(r.packets for r in dnat) >= 1


def test_iptables_save_skips_what_it_cannot_read() -> None:
    ruleset = parse_save(
        '*filter\n:FORWARD DROP [0:0]\n-A FORWARD -m comment --comment "unterminated\n[x:y] -A\n-A\nCOMMIT\n'
    )
    assert ruleset.chain("filter", "FORWARD").policy == "DROP"  # type: ignore[union-attr]
    assert ruleset.rules == ()


def test_iptables_findings_of_a_working_forward() -> None:
    found = iptables_rules.findings(xt("iptables-live"), LIVE)
    assert failed(found) == []
    assert ("rules.domain", OK, "web1") in {(f.id, f.severity, f.subject) for f in found}
    translated = next(f for f in found if f.id == "counters.translated")
    assert translated.summary.startswith(("1 ", "2 "))  # the probe's connection(s)
    assert iptables_rules.live_chains(xt("iptables-live")) == {names.domain_chain(WEB1)}


def test_iptables_findings_our_jump_below_libvirts_reject() -> None:
    found = iptables_rules.findings(xt("iptables-below-libvirt"), LIVE)
    assert failed(found) == ["rules.domain", "rules.order"]  # its rules are there, but not reached
    order = next(f for f in found if f.id == "rules.order")
    assert "LIBVIRT_FW" in order.evidence and order.fix.startswith("libvirt-portfwd sync")
    assert iptables_rules.live_chains(xt("iptables-below-libvirt")) == set()


def test_iptables_findings_forward_policy_drop_with_our_accept_gone() -> None:
    found = iptables_rules.findings(xt("iptables-policy-drop-accept-gone"), LIVE)
    assert failed(found) == ["path.forward_policy", "rules.domain", "rules.hooks"]
    hooks = next(f for f in found if f.id == "rules.hooks" and f.severity == FAIL)
    assert "filter FORWARD" in hooks.summary


# --- nft -j ----------------------------------------------------------------------------------------


def test_nft_json_parses_base_chains_rules_verdicts_and_elements() -> None:
    ruleset = nft("nftables-live")
    guest_nat = ruleset.chain("ip", "libvirt_network", "guest_nat")
    assert guest_nat is not None and (guest_nat.hook, guest_nat.type, guest_nat.policy) == (
        "postrouting",
        "nat",
        "accept",
    )
    gate = ruleset.rules_of("ip", "libvirt_network", "guest_input")[0]
    assert gate.comment == names.tag() and gate.verdict == "accept" and gate.ct_dnat and gate.counter is not None
    reject = ruleset.rules_of("ip", "libvirt_network", "guest_input")[-1]
    assert reject.verdict == "reject" and not reject.unconditional
    assert nftables_rules.owner_uuids(ruleset) == {WEB1}
    assert {e.set for e in ruleset.elements if e.comment == names.tag(WEB1)} == {"dnat_tcp", "dnat_udp"}


def test_nft_json_refuses_what_is_not_nfts_json() -> None:
    for text in ("not json", "[1, 2]", '{"nftables": 3}'):
        with pytest.raises(ValueError, match="not nft's JSON"):
            parse(text)
    assert parse("").rules == ()
    odd = parse(
        '{"nftables": [{"rule": {"family": "ip", "table": "t", "chain": "c", "expr": [{"jump": 5}, 7]}},'
        ' {"x": 1, "y": 2}]}'
    )
    assert odd.rules[0].verdict == "jump" and odd.rules[0].handle == 0


def test_nft_findings_of_a_working_forward() -> None:
    found = nftables_rules.findings(nft("nftables-live"), LIVE)
    assert failed(found) == []
    assert nftables_rules.live_uuids(nft("nftables-live")) == {WEB1}
    assert any(f.id == "counters.accepted" for f in found)


def test_nft_findings_our_lookups_flushed() -> None:
    found = nftables_rules.findings(nft("nftables-flushed"), LIVE)
    assert failed(found) == ["rules.dispatch"]
    assert nftables_rules.live_uuids(nft("nftables-flushed")) == set()


def test_nft_findings_our_table_gone() -> None:
    assert failed(nftables_rules.findings(nft("nftables-table-gone"), LIVE)) == ["rules.domain", "rules.table"]


def test_nft_findings_the_gate_missing() -> None:
    document = json.loads((LISTINGS / "nftables-live.nft.json").read_text())
    document["nftables"] = [
        item
        for item in document["nftables"]
        if item.get("rule", {}).get("comment") != names.tag()
        or "rule" not in item
        or item["rule"]["table"] != "libvirt_network"
    ]
    ruleset = parse(json.dumps(document))
    assert nftables_rules.gate_of(ruleset).present and not nftables_rules.gate_of(ruleset).ok
    gate = next(f for f in nftables_rules.findings(ruleset, LIVE) if f.id == "rules.gate")
    assert gate.severity == FAIL and "missing" in gate.summary and gate.fix.startswith("libvirt-portfwd sync")


# --- other tables on the path ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_a_foreign_policy_drop_chain_is_named_with_its_fix(backend: str) -> None:
    found = foreign_findings(nft(f"{backend}-foreign-drop"), backend)
    [drop] = [f for f in found if f.severity == FAIL]
    assert drop.id == "path.foreign_drop" and "inet filter forward" in drop.summary and "policy drop" in drop.evidence
    if backend == "nftables":
        assert drop.fix.splitlines()[0] == (
            "nft insert rule inet filter forward ct mark & 0x20000000 == 0x20000000 ct status dnat accept"
        )
    else:  # both ways: into the bridge, and the guest's replies out of it
        assert drop.fix.splitlines()[:2] == [
            'nft insert rule inet filter forward oifname "virbr0" ct status dnat accept',
            'nft insert rule inet filter forward iifname "virbr0" ct status dnat accept',
        ]
    assert drop.fix.splitlines()[-1].startswith("# and the same rule(s) in /etc/nftables.conf (table inet filter")


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_nothing_foreign_on_the_path(backend: str) -> None:
    found = foreign_findings(nft(f"{backend}-live"), backend)
    assert [(f.id, f.severity) for f in found] == [("path.foreign", OK)]


def test_under_nftables_the_iptables_nft_filter_table_is_foreign() -> None:
    """iptables-nft's ip filter FORWARD (Docker's, ufw's) with policy DROP, seen by our nft backend."""
    ruleset = nft("iptables-policy-drop-accept-gone")
    [drop] = [f for f in foreign_findings(ruleset, "nftables") if f.id == "path.foreign_drop"]
    assert (
        drop.fix == "iptables -I FORWARD -m conntrack --ctstate DNAT -m connmark --mark 0x20000000/0x20000000 -j ACCEPT"
    )
    assert [f.id for f in foreign_findings(ruleset, "iptables")] == ["path.foreign"]  # under iptables: our own view


# --- odd listings: a clear error or data, never a traceback ------------------------------------------


def _mutations(value: object, rng: random.Random, depth: int = 0) -> object:
    """The value with some of its parts replaced by values of other types, dropped or doubled."""
    odd: list[object] = [None, 0, -1, True, "", "x", [], {}, 2**70, 1.5]
    if rng.random() < 0.08:
        return rng.choice(odd)
    if isinstance(value, dict):
        return {k: _mutations(v, rng, depth + 1) for k, v in value.items() if rng.random() > 0.05}
    if isinstance(value, list):
        items = [_mutations(v, rng, depth + 1) for v in value if rng.random() > 0.05]
        return items + items[:1] if rng.random() < 0.05 else items
    return value


def test_mutated_nft_listings_parse_or_are_refused() -> None:
    rng = random.Random(1312)
    sources = [json.loads((LISTINGS / f"{n}.nft.json").read_text()) for n in ("nftables-live", "iptables-foreign-drop")]
    for _ in range(400):
        text = json.dumps(_mutations(rng.choice(sources), rng))
        try:
            ruleset = parse(text)
        except ValueError as exc:
            assert str(exc).startswith("not nft's JSON"), exc
            continue
        nftables_rules.findings(ruleset, LIVE)  # conclusions from odd data: findings, never a traceback
        foreign_findings(ruleset, "nftables")


def test_mutated_iptables_listings_parse() -> None:
    rng = random.Random(1313)
    lines = (LISTINGS / "iptables-live.iptables-save").read_text().splitlines()
    for _ in range(300):
        mutated = [
            line
            if rng.random() > 0.1
            else line[: rng.randrange(len(line) + 1)] + rng.choice(['"', "[", " -j", "\x00", ""])
            for line in rng.sample(lines, len(lines))
            if rng.random() > 0.05
        ]
        iptables_rules.findings(parse_save("\n".join(mutated)), LIVE)
