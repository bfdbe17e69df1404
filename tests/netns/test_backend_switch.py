"""Changing firewall backends (libvirt's, and so ours under auto) leaves nothing of the old one."""

from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.netns.conftest import Lab
from tests.netns.test_cli import WEB1, node_xml, web1_xml

pytestmark = pytest.mark.netns


def test_sync_after_libvirt_changed_firewall_backend_leaves_nothing_of_the_old_one(lab: Lab, tmp_path: Path) -> None:
    """libvirt moved from iptables to nftables (network.conf, libvirtd restarted): sync follows."""
    before = lab.exec(lab.host, "iptables-save")
    assert lab.hook("web1", web1_xml(), "started").returncode == 0
    assert "PORTFWD" in lab.exec(lab.host, "iptables-save")
    # libvirt now runs its network with nftables: its iptables rules are gone, its table is there
    lab.exec(lab.host, "iptables", "-D", "FORWARD", "-j", "LIBVIRT_FWI")
    lab.exec(lab.host, "nft", "-f", str(DATA / "libvirt-nftables.nft"))
    lab.kind = "nftables"
    lab.write_network()
    proc = lab.cli("sync", "--connect", node_xml(tmp_path, web1_xml()))
    assert proc.returncode == 0, proc.stderr
    after = lab.exec(lab.host, "iptables-save")
    assert "PORTFWD" not in after and "libvirt-portfwd" not in after and "PF" not in after.replace("PREROUTING", "")
    assert len(after.splitlines()) <= len(before.splitlines())
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    assert lab.records()[WEB1]["backend"] == "nftables"
