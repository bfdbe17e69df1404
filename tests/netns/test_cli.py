"""The CLI against a libvirt-like namespace; libvirt's API is its own test:///<node.xml> driver."""

from pathlib import Path

import pytest

from libvirt_portfwd.names import domain_chain
from tests.netns.conftest import Lab, port_forward, portfwd_metadata
from tests.netns.fakehost import HOST_ADDRESS, domain_xml

pytestmark = [pytest.mark.netns, pytest.mark.parametrize("lab", ["iptables", "nftables"], indirect=True)]

WEB1 = "6f1d0c9a-6a3b-4c55-9a3e-2f0b6f6a1c01"
GONE = "11111111-2222-4333-8444-555555555555"


def node_xml(tmp_path: Path, *domains: str) -> str:
    """A libvirt test-driver node whose domains are running, as the driver starts them."""
    path = tmp_path / "node.xml"
    path.write_text("<node>" + "".join(d.replace("type='qemu'", "type='test'") for d in domains) + "</node>")
    return f"test://{path}"


def web1_xml() -> str:
    return domain_xml(
        "web1", WEB1, metadata=portfwd_metadata(port_forward("tcp", [(20443, 443)], address=HOST_ADDRESS))
    )


def test_sync_repairs_a_flush_and_drops_stopped_domains(lab: Lab, tmp_path: Path) -> None:
    before = lab.firewall()
    assert lab.hook("web1", web1_xml(), "started").returncode == 0
    gone = domain_xml(
        "gone", GONE, mac="52:54:00:aa:bb:ee", metadata=portfwd_metadata(port_forward("tcp", [(2222, 22)]))
    )
    lab.write_leases({"52:54:00:aa:bb:cc": "192.168.122.178", "52:54:00:aa:bb:ee": "192.168.122.180"})
    assert lab.hook("gone", gone, "started").returncode == 0
    assert set(lab.records()) == {WEB1, GONE}
    live = lab.our_rules()

    # an admin flushes everything of ours by hand
    lab.flush_ours()
    assert lab.probe("tcp", 20443).startswith("ERROR")
    status = lab.cli("status", check=True).stdout
    [web1_line] = [line for line in status.splitlines() if line.startswith("web1")]
    assert f"backend: {lab.kind} (auto: libvirt runs network default with its {lab.kind} firewall)" in status
    assert web1_line.endswith("NO")

    # only web1 still runs: sync brings it back and removes gone's rules and record
    uri = node_xml(tmp_path, web1_xml())
    proc = lab.cli("sync", "--connect", uri)
    assert proc.returncode == 0, proc.stderr
    assert set(lab.records()) == {WEB1}
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    assert [r for r in lab.our_rules() if "2222" in r] == []
    assert sorted(lab.our_rules()) == sorted(r for r in live if GONE not in r and domain_chain(GONE) not in r)
    assert next(line for line in lab.cli("status", check=True).stdout.splitlines() if line.startswith("web1")).endswith(
        "yes"
    )

    # nothing runs: sync leaves the firewall as it was before anything
    proc = lab.cli("sync", "--connect", node_xml(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert lab.firewall() == before and lab.records() == {}


def test_apply_and_remove_by_hand(lab: Lab, tmp_path: Path) -> None:
    before = lab.firewall()
    uri = node_xml(tmp_path, web1_xml())
    proc = lab.cli("apply", "web1", "--connect", uri)
    assert proc.returncode == 0, proc.stderr
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    proc = lab.cli("remove", "web1")
    assert proc.returncode == 0, proc.stderr
    assert lab.firewall() == before


def test_cli_errors_and_usage(lab: Lab, tmp_path: Path) -> None:
    proc = lab.cli("apply", "nosuch", "--connect", node_xml(tmp_path))
    assert proc.returncode == 1 and proc.stderr.startswith("libvirt-portfwd: nosuch: no such domain")
    assert lab.cli("remove").returncode == 2
    assert lab.cli("frobnicate").returncode == 2
    bad = tmp_path / "bad.xml"
    bad.write_text("<domain>")
    proc = lab.cli("plan", str(bad))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "not well-formed XML" in proc.stderr


def test_plan_prints_the_guides_rules_and_changes_nothing(lab: Lab, tmp_path: Path) -> None:
    before = lab.firewall()
    xml = tmp_path / "web1.xml"
    xml.write_text(web1_xml())
    proc = lab.cli("plan", str(xml), check=True)
    assert "192.168.122.0/24" not in proc.stdout  # nothing as wide as the guide's FORWARD rule
    if lab.kind == "iptables":
        rules = [line for line in proc.stdout.splitlines() if line.startswith(f"-A {domain_chain(WEB1)} ")]
        assert any(
            f"-d {HOST_ADDRESS}/32 -p tcp -m tcp --dport 20443" in r
            and r.endswith("-j DNAT --to-destination 192.168.122.178:443")
            for r in rules
        )
        [accept] = [r for r in rules if r.endswith("-j ACCEPT")]
        # the FORWARD accept is no wider than the forward: one guest address, one port, DNATed only
        assert "-d 192.168.122.178/32 -o virbr0 -p tcp -m tcp --dport 443 -m conntrack --ctstate DNAT" in accept
        assert f"--ctorigdst {HOST_ADDRESS}/32 --ctorigdstport 20443" in accept
    else:
        assert f'{HOST_ADDRESS} . 20443 comment "libvirt-portfwd:{WEB1}" : 192.168.122.178 . 443' in proc.stdout
        # the one accept: connections our DNAT marked, inserted above libvirt's reject
        [accept] = [line for line in proc.stdout.splitlines() if "accept" in line and "policy accept" not in line]
        assert accept.startswith("insert rule ip libvirt_network guest_input ct mark & 0x20000000 == 0x20000000")
    assert lab.firewall() == before and lab.records() == {}
