"""Reaching a forward from the host itself and from guests on the same network (hairpin).

The host connecting to its own public address goes through nat OUTPUT, not PREROUTING. A guest
connecting to the public address is DNATed back onto its own bridge; without a masquerade the
reply would go straight back, from the wrong address. Neither needs a global sysctl.
"""

import pytest

from tests.netns.conftest import Lab
from tests.netns.test_hook import guide_xml

pytestmark = [pytest.mark.netns, pytest.mark.parametrize("lab", ["iptables", "nftables"], indirect=True)]


def test_host_reaches_its_own_public_address_and_port(lab: Lab) -> None:
    for proc in lab.start("web1", guide_xml()):
        assert proc.returncode == 0, proc.stderr
    assert lab.probe("tcp", 20443, ns=lab.host) == "guest tcp 443"
    assert lab.probe("udp", 5353, ns=lab.host) == "guest udp 5353 ping"
    assert lab.probe("tcp", 20443, address="127.0.0.1", ns=lab.host).startswith("ERROR")  # loopback: not ours


def test_another_guest_reaches_the_public_address_and_port_hairpin(lab: Lab) -> None:
    for proc in lab.start("web1", guide_xml()):
        assert proc.returncode == 0, proc.stderr
    neighbour = lab.add_neighbour()
    assert lab.probe("tcp", 20443, ns=neighbour) == "guest tcp 443"
    assert lab.probe("udp", 5353, ns=neighbour) == "guest udp 5353 ping"
    assert lab.probe("tcp", 22, ns=neighbour).startswith("ERROR")  # not forwarded: not opened
    assert lab.probe("tcp", 20443) == "guest tcp 443"  # from outside, as before
