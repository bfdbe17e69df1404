"""The nftables backend's accept beside a neighbour's iptables-nft FORWARD drop (accept.py), and
doctor's judgement of other tables (foreign.py), pure: listings written here in the shape
iptables-nft-save 1.8.9 and nft 1.0.6 print them."""

import json
from ipaddress import IPv4Address
from typing import Any

from libvirt_portfwd import names
from libvirt_portfwd.backends import accept, iptables_rules, nftables_rules
from libvirt_portfwd.backends.foreign import FIREWALLD_FIX, foreign_findings
from libvirt_portfwd.backends.iptables_rules import Observed
from libvirt_portfwd.backends.nft_listing import parse
from libvirt_portfwd.backends.nft_text import compose, split
from libvirt_portfwd.backends.xt_listing import parse_save
from libvirt_portfwd.findings import FAIL, OK
from libvirt_portfwd.model import Forward, Plan

WEB1 = "6f1d0c9a-6a3b-4c55-9a3e-2f0b6f6a1c01"
PLAN = Plan(
    "web1",
    WEB1,
    (
        Forward(
            "tcp", IPv4Address("203.0.113.10"), None, (), 20443, 20443, 443, "52:54:00:aa:bb:cc", "virbr0",
            IPv4Address("192.168.122.178"), "metadata",
        ),
    ),
)  # fmt: skip
DOCKER = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -j DOCKER
-A DOCKER-USER -j RETURN
COMMIT
"""
UFW = DOCKER.replace(":DOCKER-USER - [0:0]\n", "").replace("-A FORWARD -j DOCKER-USER\n", "")
UFW = UFW.replace("-A DOCKER-USER -j RETURN\n", "-A FORWARD -j ufw-before-forward\n")
GATE = nftables_rules.Gate(present=True, ok=True)


def test_no_neighbour_no_text_of_ours_beyond_nfts() -> None:
    """Hosts without a FORWARD drop: byte-identical to the nft text alone (the goldens)."""
    alone = nftables_rules.render_change(PLAN, GATE)
    assert nftables_rules.render_change(PLAN, GATE, "", accept.NONE) == alone
    assert nftables_rules.render_rebuild([PLAN], GATE, accept.NONE) == nftables_rules.render_rebuild([PLAN], GATE)
    assert split(alone) == ("", alone, True) and compose("", alone, False) == alone


def test_beside_docker_our_jump_goes_into_docker_user() -> None:
    neighbour = accept.neighbour_of(parse_save(DOCKER))
    assert (neighbour.drops, neighbour.place, neighbour.docker_jumped) == (True, "DOCKER-USER", True)
    xt, nft, first = split(nftables_rules.render_change(PLAN, GATE, "", neighbour))
    assert first and nft == nftables_rules.render_change(PLAN, GATE)
    assert f"-I DOCKER-USER 1 -m comment --comment libvirt-portfwd -j {names.ACCEPT_CHAIN}" in xt.splitlines()
    assert f":{names.ACCEPT_CHAIN} - [0:0]" in xt and f"-A {names.ACCEPT_CHAIN} {accept.REPLIES}" in xt
    # the accept is the iptables backend's own filter line: one text, another chain name
    ours = iptables_rules.render_change(WEB1, PLAN, 0, {t: accept.NOTHING for t in ("nat", "filter")})
    pf, pa = names.domain_chain(WEB1), names.domain_chain(WEB1, names.ACCEPT_CHAIN_PREFIX)
    [accept_line] = [
        line for line in ours.splitlines() if line.startswith(f"-A {pf} -d ") and line.endswith("-j ACCEPT")
    ]
    assert accept_line.replace(pf, pa) in xt.splitlines()
    assert "FORWARD" not in xt


def test_beside_ufw_our_jump_goes_on_top_of_forward() -> None:
    neighbour = accept.neighbour_of(parse_save(UFW))
    assert (neighbour.drops, neighbour.place) == (True, "FORWARD")
    xt, _, _ = split(nftables_rules.render_change(PLAN, GATE, "", neighbour))
    assert f"-I FORWARD 1 -m comment --comment libvirt-portfwd -j {names.ACCEPT_CHAIN}" in xt.splitlines()


def applied(listing: str) -> str:
    """What DOCKER looks like with our accept as a change wrote it (what iptables-save prints)."""
    pa = names.domain_chain(WEB1, names.ACCEPT_CHAIN_PREFIX)
    ours = (
        f":{names.ACCEPT_CHAIN} - [0:0]\n:{pa} - [0:0]\n"
        f"-A DOCKER-USER -m comment --comment libvirt-portfwd -j {names.ACCEPT_CHAIN}\n"
        f"-A {names.ACCEPT_CHAIN} {accept.REPLIES}\n"
        f'-A {names.ACCEPT_CHAIN} -m comment --comment "libvirt-portfwd:{WEB1}" -j {pa}\n'
        f'-A {pa} -d 192.168.122.178/32 -o virbr0 -p tcp -m comment --comment "libvirt-portfwd:{WEB1}" -j ACCEPT\n'
    )
    return listing.replace("-A DOCKER-USER -j RETURN\n", ours + "-A DOCKER-USER -j RETURN\n")


def test_read_back_reached_and_removals() -> None:
    neighbour = accept.neighbour_of(parse_save(applied(DOCKER)))
    assert accept.reached(neighbour) == {WEB1} and accept.owners(neighbour) == {WEB1}
    assert not accept.wrong(neighbour, {WEB1}) and accept.wrong(
        neighbour, {WEB1, "0" * 8 + "-0000-0000-0000-" + "0" * 12}
    )
    finding = accept.finding(neighbour, {WEB1: "web1"})
    assert finding is not None and (finding.id, finding.severity) == ("path.foreign", OK)
    # a change again leaves our jump and chain alone, rewriting only the domain's chain
    xt, _, _ = split(nftables_rules.render_change(PLAN, GATE, "", neighbour))
    assert "-I DOCKER-USER" not in xt and f":{names.ACCEPT_CHAIN} " not in xt
    # the last removal: after nft's, our jump, chain and the domain's chain go
    removal = nftables_rules.render_removals(PLAN, neighbour)["last"]
    xt, nft, first = split(removal)
    assert not first and "delete table ip libvirt_portfwd" in nft
    assert f"-D DOCKER-USER -m comment --comment libvirt-portfwd -j {names.ACCEPT_CHAIN}" in xt.splitlines()
    assert f"-X {names.ACCEPT_CHAIN}" in xt.splitlines()


def test_the_drop_gone_takes_ours_away_and_a_flush_is_seen() -> None:
    gone = accept.neighbour_of(parse_save(applied(DOCKER).replace(":FORWARD DROP", ":FORWARD ACCEPT")))
    assert not gone.drops and gone.ours and accept.wrong(gone, {WEB1}) and accept.finding(gone, {}) is None
    xt, _, first = split(nftables_rules.render_rebuild([PLAN], GATE, gone))
    assert not first and f"-X {names.ACCEPT_CHAIN}" in xt.splitlines() and "-A " not in xt
    flushed = accept.neighbour_of(parse_save(DOCKER.replace(":DOCKER - [0:0]", f":{names.ACCEPT_CHAIN} - [0:0]")))
    assert accept.reached(flushed) == set()
    finding = accept.finding(flushed, {WEB1: "web1"})
    assert finding is not None and (finding.id, finding.severity) == ("path.foreign_drop", FAIL)
    assert "our jump in DOCKER-USER" in finding.evidence and finding.fix.startswith("libvirt-portfwd sync")


def test_removal_without_a_neighbour_is_nfts_alone() -> None:
    removals = nftables_rules.render_removals(PLAN, accept.NONE)
    assert removals == {
        "other": nftables_rules.render_removal(PLAN, None, last=False),
        "last": nftables_rules.render_removal(PLAN, None, last=True),
    }
    assert accept.Neighbour(drops=False, observed=Observed((), None)).ours is False


# --- foreign tables ----------------------------------------------------------------------------------


def ruleset(*objects: dict[str, Any]) -> Any:
    return parse(json.dumps({"nftables": list(objects)}))


def base(family: str, table: str, name: str, hook: str, policy: str = "accept") -> dict[str, Any]:
    return {
        "chain": {"family": family, "table": table, "name": name, "handle": 1, "type": "filter", "hook": hook}
        | {"prio": 0, "policy": policy}
    }


def rule(family: str, table: str, chain: str, *expr: dict[str, Any]) -> dict[str, Any]:
    return {"rule": {"family": family, "table": table, "chain": chain, "handle": 9, "expr": list(expr)}}


def test_ip6_tables_raise_nothing_for_our_ipv4_forwards() -> None:
    found = foreign_findings(ruleset(base("ip6", "filter", "FORWARD", "forward", "drop")), "nftables")
    assert [(f.id, f.severity) for f in found] == [("path.foreign", OK)]


def test_firewalld_strict_is_firewalld_s_own_fix() -> None:
    chains = (
        base("inet", "firewalld", "filter_FORWARD", "forward"),
        rule("inet", "firewalld", "filter_FORWARD", {"jump": {"target": "filter_FORWARD_POLICIES"}}),
        rule("inet", "firewalld", "filter_FORWARD", {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}),
    )
    for backend in ("iptables", "nftables"):
        [drop] = [f for f in foreign_findings(ruleset(*chains), backend) if f.id == "path.foreign_drop"]
        assert drop.severity == FAIL and drop.fix == FIREWALLD_FIX
        assert "nft " not in drop.fix and "StrictForwardPorts=no" in drop.fix and "firewall-cmd --reload" in drop.fix


def test_an_admin_s_forward_drop_is_a_fail_with_the_exact_line() -> None:
    [drop] = foreign_findings(ruleset(base("inet", "filter", "forward", "forward", "drop")), "nftables")
    assert (drop.id, drop.severity) == ("path.foreign_drop", FAIL)
    line = "nft insert rule inet filter forward ct mark & 0x20000000 == 0x20000000 ct status dnat accept"
    assert drop.fix.splitlines()[0] == line and "/etc/nftables.conf" in drop.fix.splitlines()[1]


def test_an_input_drop_of_the_guests_dhcp_names_the_admins_lines() -> None:
    dport = {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 67}}
    admin = ruleset(base("inet", "filter", "input", "input", "drop"))
    [found] = [f for f in foreign_findings(admin, "iptables") if f.id == "path.foreign_input"]
    assert found.severity == FAIL and found.fix.splitlines()[1:] == [
        'nft insert rule inet filter input iifname "virbr0" udp dport 67 accept',
        'nft insert rule inet filter input iifname "virbr0" udp dport 53 accept',
        'nft insert rule inet filter input iifname "virbr0" tcp dport 53 accept',
    ]
    ufw = ruleset(
        base("ip", "filter", "INPUT", "input", "drop"),
        {"chain": {"family": "ip", "table": "filter", "name": "ufw-user-input", "handle": 2}},
        rule("ip", "filter", "INPUT", {"jump": {"target": "ufw-user-input"}}),
        rule("ip", "filter", "ufw-user-input", dport, {"accept": None}),
    )
    [found] = [f for f in foreign_findings(ufw, "nftables") if f.id == "path.foreign_input"]
    assert "udp 67" not in found.summary and found.fix.splitlines()[1:] == [
        "ufw allow in on virbr0 to any port 53 proto udp",
        "ufw allow in on virbr0 to any port 53 proto tcp",
    ]
    assert [f for f in foreign_findings(ufw, "iptables") if f.id == "path.foreign_input"] == []  # libvirt's own view
