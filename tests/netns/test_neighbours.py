"""Beside a neighbour whose iptables-nft ``filter FORWARD`` drops, under libvirt's nftables
firewall (issue 15): Docker (policy DROP once it turned forwarding on, its DOCKER-USER chain
jumped first) and ufw (``DEFAULT_FORWARD_POLICY="DROP"``, no DOCKER-USER). Each test builds the
neighbour's ruleset itself with the real ``iptables-nft`` commands, in the lab's host namespace
with libvirt's own nftables rules loaded, and sends real packets from the client namespace.

Shown for each: without our accept there the forward is unreachable (TCP and UDP) although our
table and libvirt's gate accept it; with it, reachable, and the guest's other ports stay
closed; our one jump stands where the neighbour documents it (DOCKER-USER; else the top of
FORWARD); the neighbour's restart or reload removing it -> the service puts it back within
2 s; doctor says which (fixed by us, or a FAIL naming what is missing); our last forward
removed -> the neighbour's ruleset exactly as before (counters normalised).
"""

import json
import re
import time
from typing import Any

import pytest

from libvirt_portfwd import names
from tests.netns.conftest import Lab, running_service
from tests.netns.fakehost import GUEST_ADDRESS, domain_xml
from tests.netns.test_doctor import failing, findings, install_hooks
from tests.netns.test_hook import WEB1, guide_xml

pytestmark = [pytest.mark.netns, pytest.mark.parametrize("lab", ["nftables"], indirect=True)]

IPT = "iptables-nft"
# What Docker 26 writes into filter once it turned forwarding on (tests/e2e/NEIGHBOURS-FINDINGS.md), in order.
DOCKER = [
    "-N DOCKER",
    "-N DOCKER-ISOLATION-STAGE-1",
    "-N DOCKER-ISOLATION-STAGE-2",
    "-N DOCKER-USER",
    "-A FORWARD -j DOCKER-USER",
    "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
    "-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A FORWARD -o docker0 -j DOCKER",
    "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
    "-A FORWARD -i docker0 -o docker0 -j ACCEPT",
    "-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2",
    "-A DOCKER-ISOLATION-STAGE-1 -j RETURN",
    "-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP",
    "-A DOCKER-ISOLATION-STAGE-2 -j RETURN",
    "-A DOCKER-USER -j RETURN",
    "-P FORWARD DROP",
]
# ufw 0.36's filter chains on the forward and input hooks, DEFAULT_FORWARD_POLICY="DROP".
UFW_JUMPS = [
    "-A FORWARD -j ufw-before-logging-forward",
    "-A FORWARD -j ufw-before-forward",
    "-A FORWARD -j ufw-after-forward",
    "-A FORWARD -j ufw-after-logging-forward",
    "-A FORWARD -j ufw-reject-forward",
    "-A FORWARD -j ufw-track-forward",
]
UFW = [
    *(f"-N {chain}" for chain in (j.split()[-1] for j in UFW_JUMPS)),
    "-N ufw-user-forward",
    "-N ufw-before-input",
    "-N ufw-user-input",
    *UFW_JUMPS,
    "-A ufw-before-forward -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A ufw-before-forward -p icmp -m icmp --icmp-type 8 -j ACCEPT",
    "-A ufw-before-forward -j ufw-user-forward",
    "-A INPUT -j ufw-before-input",
    "-A ufw-before-input -i lo -j ACCEPT",
    "-A ufw-before-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A ufw-before-input -p udp -m udp --sport 67 --dport 68 -j ACCEPT",
    "-A ufw-before-input -p tcp -m tcp --dport 22 -j ACCEPT",
    "-A ufw-before-input -j ufw-user-input",
    "-P INPUT DROP",
    "-P FORWARD DROP",
]


def iptables(lab: Lab, rule: str) -> None:
    lab.exec(lab.host, IPT, "-w", *rule.split())


def build(lab: Lab, rules: list[str]) -> None:
    for rule in rules:
        iptables(lab, rule)


def neighbour_rules(lab: Lab) -> str:
    """iptables-nft's filter table as its owner sees it: no comment lines, no counters."""
    out = lab.exec(lab.host, f"{IPT}-save", "-t", "filter")
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    return "\n".join(re.sub(r" \[\d+:\d+\]$", "", line) for line in lines)


def chain(lab: Lab, name: str) -> list[str]:
    return [r for r in lab.exec(lab.host, IPT, "-w", "-S", name).splitlines() if r.startswith("-A ")]


OUR_JUMP = f"-m comment --comment {names.tag()} -j {names.ACCEPT_CHAIN}"


def reachable(lab: Lab) -> None:
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    assert lab.probe("udp", 5353) == "guest udp 5353 ping"
    # the guest's other ports stay closed, on the host address and directly
    assert lab.probe("tcp", 22).startswith("ERROR")
    assert lab.probe("tcp", 22, address=GUEST_ADDRESS).startswith("ERROR")
    assert lab.probe("tcp", 443, address=GUEST_ADDRESS).startswith("ERROR")


def unreachable(lab: Lab) -> None:
    assert lab.probe("tcp", 20443, timeout=1.0).startswith("ERROR")
    assert lab.probe("udp", 5353, timeout=1.0).startswith("ERROR")


def doctor(lab: Lab) -> tuple[int, dict[str, Any]]:
    proc = lab.cli("doctor", "--json")
    assert proc.stderr == "", proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def path_finding(document: dict[str, Any]) -> dict[str, str]:
    [found] = [
        f for f in findings(document) if f["id"].startswith("path.foreign") and "ip filter FORWARD" in f["summary"]
    ]
    return found


def wait_until(condition: Any, within: float) -> float:
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < within, f"not within {within} s"
        time.sleep(0.05)
    return time.monotonic() - began


def stop_web1(lab: Lab) -> None:
    for proc in lab.stop("web1", domain_xml("web1", WEB1, metadata="", running=False)):
        assert proc.returncode == 0, proc.stderr


def test_nothing_is_written_where_no_forward_drops(lab: Lab) -> None:
    """A host without a neighbour: no ip filter table appears; the ruleset is nft's alone."""
    install_hooks(lab)
    for proc in lab.start("web1", guide_xml()):
        assert proc.returncode == 0, proc.stderr
    reachable(lab)
    assert "table ip filter" not in lab.firewall()
    record = lab.records()[WEB1]
    assert not any("iptables" in text for text in record["teardown"].values())


def started_beside(lab: Lab, neighbour: list[str]) -> str:
    """The neighbour's chains built, then web1 started through the hook and reachable; the
    neighbour's rules before we came."""
    build(lab, neighbour)
    before = neighbour_rules(lab)
    install_hooks(lab)
    for proc in lab.start("web1", guide_xml()):
        assert proc.returncode == 0, proc.stderr
    reachable(lab)
    return before


def test_docker_forward_drop(lab: Lab) -> None:
    before = started_beside(lab, DOCKER)
    # our one jump, first in DOCKER-USER; nothing of ours in FORWARD
    assert chain(lab, "DOCKER-USER") == [f"-A DOCKER-USER {OUR_JUMP}", "-A DOCKER-USER -j RETURN"]
    assert not any(names.tag() in r for r in chain(lab, "FORWARD"))
    accepts = chain(lab, names.domain_chain(WEB1, names.ACCEPT_CHAIN_PREFIX))
    assert len(accepts) == 3 and all("--ctstate DNAT" in r and r.endswith("-j ACCEPT") for r in accepts)
    code, document = doctor(lab)
    fixed = path_finding(document)
    assert (code, fixed["id"], fixed["severity"]) == (0, "path.foreign", "ok"), fixed
    assert "fixed by us" in fixed["summary"] and "DOCKER-USER" in fixed["summary"]

    # `systemctl restart docker` can leave DOCKER-USER as Docker makes it: ours gone ->
    # unreachable, though our table and libvirt's gate accept (the measurement)
    iptables(lab, "-F DOCKER-USER")
    iptables(lab, "-A DOCKER-USER -j RETURN")
    unreachable(lab)
    code, document = doctor(lab)
    missing = path_finding(document)
    assert (code, missing["id"], missing["severity"]) == (1, "path.foreign_drop", "fail"), missing
    assert "our jump in DOCKER-USER" in missing["evidence"] and missing["fix"].startswith("libvirt-portfwd sync")
    assert [f["id"] for f in failing(document)] == ["path.foreign_drop", "rules.domain"]

    with running_service(lab):
        took = lab.wait_for("tcp", 20443, "guest tcp 443", within=2.0)
        print(f"docker: our accept back {took:.2f} s after the flush")
        reachable(lab)
        assert chain(lab, "DOCKER-USER")[0] == f"-A DOCKER-USER {OUR_JUMP}"
        stop_web1(lab)
    assert neighbour_rules(lab) == before
    assert "libvirt_portfwd" not in lab.firewall() and names.tag() not in lab.firewall()


def test_ufw_forward_drop(lab: Lab) -> None:
    before = started_beside(lab, UFW)
    # no DOCKER-USER: our jump at the top of FORWARD, as the iptables backend places its own
    assert chain(lab, "FORWARD")[0] == f"-A FORWARD {OUR_JUMP}"
    code, document = doctor(lab)
    fixed = path_finding(document)
    assert (fixed["id"], fixed["severity"]) == ("path.foreign", "ok") and "fixed by us" in fixed["summary"]
    # ufw's INPUT drop keeps guests from libvirt's DHCP and DNS: named with ufw's own lines
    [lease] = [f for f in failing(document) if f["id"] == "path.foreign_input"]
    assert lease["fix"].splitlines()[1:] == [
        "ufw allow in on virbr0 to any port 67 proto udp",
        "ufw allow in on virbr0 to any port 53 proto udp",
        "ufw allow in on virbr0 to any port 53 proto tcp",
    ]
    assert code == 1 and [f["id"] for f in failing(document)] == ["path.foreign_input"]

    # a ufw restart flushes FORWARD and puts its own jumps back
    iptables(lab, "-F FORWARD")
    build(lab, UFW_JUMPS)
    unreachable(lab)
    code, document = doctor(lab)
    missing = path_finding(document)
    assert (missing["id"], missing["severity"]) == ("path.foreign_drop", "fail")
    assert "our jump in FORWARD" in missing["evidence"]

    with running_service(lab):
        took = lab.wait_for("tcp", 20443, "guest tcp 443", within=2.0)
        print(f"ufw: our accept back {took:.2f} s after the flush")
        reachable(lab)
        assert chain(lab, "FORWARD")[0] == f"-A FORWARD {OUR_JUMP}"
        # the neighbour's drop goes (ufw's default forward policy ACCEPT): ours goes with it
        iptables(lab, "-P FORWARD ACCEPT")
        wait_until(lambda: names.ACCEPT_CHAIN not in neighbour_rules(lab), within=2.0)
        reachable(lab)
        iptables(lab, "-P FORWARD DROP")  # ... and comes back with it
        wait_until(lambda: chain(lab, "FORWARD")[0] == f"-A FORWARD {OUR_JUMP}", within=2.0)
        reachable(lab)
        stop_web1(lab)
    assert neighbour_rules(lab) == before
    assert names.tag() not in lab.firewall()
