"""The watcher puts our rules back after others rebuilt the firewall, with no hook firing.

libvirtd's SIGHUP and a firewalld reload make libvirt delete its rules and insert them again on
top, above ours; an admin may flush ours. Simulated here in both of libvirt's firewall backends.
"""

import subprocess
import time

import pytest

from tests.conftest import HOOK, NETWORK_HOOK
from tests.netns.conftest import Lab
from tests.netns.test_hook import guide_xml

pytestmark = [pytest.mark.netns, pytest.mark.parametrize("lab", ["iptables", "nftables"], indirect=True)]


def libvirt_reloads_its_rules(lab: Lab) -> None:
    """libvirt deletes its rules and inserts them again, on top of ours."""
    if lab.kind == "iptables":
        for chain in ("LIBVIRT_FWO", "LIBVIRT_FWI", "LIBVIRT_FWX"):
            lab.exec(lab.host, "iptables", "-D", "FORWARD", "-j", chain)
            lab.exec(lab.host, "iptables", "-I", "FORWARD", "1", "-j", chain)
    else:
        lab.exec(lab.host, "nft", "flush", "chain", "ip", "libvirt_network", "guest_input")
        for rule in (
            'oif "virbr0" counter reject',
            'oif "virbr0" ip daddr 192.168.122.0/24 ct state established,related counter accept',
        ):
            lab.exec(lab.host, "nft", f"insert rule ip libvirt_network guest_input {rule}")


def test_forward_is_back_within_2s_after_libvirt_reloads_its_firewall(lab: Lab, watcher: subprocess.Popen[str]) -> None:
    for proc in lab.start("web1", guide_xml()):
        assert proc.returncode == 0, proc.stderr
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    rules = sorted(lab.our_rules())
    libvirt_reloads_its_rules(lab)
    took = lab.wait_for("tcp", 20443, "guest tcp 443", within=2.0)
    print(f"{lab.kind}: reachable again {took:.2f} s after libvirt's reload")
    assert sorted(lab.our_rules()) == rules
    assert watcher.poll() is None


def test_forward_is_back_within_2s_after_an_admin_flushed_ours(lab: Lab, watcher: subprocess.Popen[str]) -> None:
    for proc in lab.start("web1", guide_xml()):
        assert proc.returncode == 0, proc.stderr
    rules = sorted(lab.our_rules())
    lab.flush_ours()
    took = lab.wait_for("tcp", 20443, "guest tcp 443", within=2.0)
    print(f"{lab.kind}: reachable again {took:.2f} s after the flush")
    time.sleep(0.5)  # our own repair is a ruleset change too: it must not start a loop
    assert sorted(lab.our_rules()) == rules
    assert watcher.poll() is None


def test_network_hook_puts_ours_back_in_order(lab: Lab) -> None:
    """`net-destroy` + `net-start`: libvirt's rules come back on top; its network hook runs after."""
    for proc in lab.start("web1", guide_xml()):
        assert proc.returncode == 0, proc.stderr
    libvirt_reloads_its_rules(lab)
    assert lab.probe("tcp", 20443).startswith("ERROR")
    argv = lab.hook_argv("default", "started")
    argv[argv.index(str(HOOK))] = str(NETWORK_HOOK)
    proc = subprocess.run(argv, input="<network/>", capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert lab.probe("tcp", 20443) == "guest tcp 443"
