"""Host ports in use: a forward that would capture a port a real process in the host namespace
listens on is refused by ``plan``, ``apply`` and the hook (one line; nothing applied), unless
host_ports.allow names the port; loopback listeners and listeners on another address are not
captured. Real sockets, real rules, real packets."""

import subprocess
from pathlib import Path

import pytest

from libvirt_portfwd.policy import BLOCKED
from tests.conftest import DATA, PYTHON
from tests.netns.conftest import Lab, port_forward, portfwd_metadata
from tests.netns.fakehost import HOST_ADDRESS, domain_xml
from tests.netns.test_cli import node_xml

pytestmark = [pytest.mark.netns, pytest.mark.parametrize("lab", ["iptables", "nftables"], indirect=True)]

WEB1 = "6f1d0c9a-6a3b-4c55-9a3e-2f0b6f6a1c01"
# proto -> (host port, guest port, what the guest answers): a stand-in sshd and a UDP service
SERVICES = {"tcp": (2222, 22, "guest tcp 22"), "udp": (5300, 5353, "guest udp 5353 ping")}
BRIDGE_ADDRESS = "192.168.122.1"  # where libvirt's dnsmasq listens (DNS) on the host


def listen(lab: Lab, proto: str, address: str, port: int) -> str:
    """A host process bound in the host namespace (killed with the lab); its name and pid as
    the refusal names them."""
    proc = subprocess.Popen(
        [*lab.enter(), PYTHON, str(DATA / "host_listener.py"), proto, address, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    lab.servers.append(proc)
    assert proc.stdout is not None
    ready, pid, comm = proc.stdout.readline().split()
    assert ready == "ready"
    return f"{comm} (pid {pid})"


def web1(proto: str, host_port: int, guest_port: int, **attrs: str) -> str:
    return domain_xml("web1", WEB1, metadata=portfwd_metadata(port_forward(proto, [(host_port, guest_port)], **attrs)))


def refusal(lab: Lab, claim: str, listener: str, owner: str, other_address: str = "") -> str:
    """The one line, as every entry point says it."""
    proto, port = listener.split()[0], listener.rsplit(":", 1)[1]
    fixes = ["stop that process"]
    if other_address:
        fixes.append(f"give the forward an address other than {other_address}")
    fixes.append(f"or allow {proto}/{port} in host_ports.allow ({lab.root}/etc/libvirt-portfwd/config.yaml)")
    return (
        f"libvirt-portfwd: web1: host port in use (metadata portForward[0]): {claim} would capture {listener}, "
        f"where {owner} listens: {', '.join(fixes)}"
    )


def plan(lab: Lab, tmp_path: Path, xml: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "web1.xml"
    path.write_text(xml)
    return lab.cli("plan", str(path))


def start_live(lab: Lab, xml: str) -> None:
    """Every hook of a start succeeds and says nothing but what went live."""
    for proc in lab.start("web1", xml):
        assert (proc.returncode, proc.stdout) == (0, ""), proc.stderr
        assert all(" live" in line for line in proc.stderr.splitlines()), proc.stderr
    assert [r["status"] for r in lab.records().values()] == ["live"]


@pytest.mark.parametrize("proto", sorted(SERVICES))
def test_plan_and_apply_refuse_a_port_a_host_process_listens_on(lab: Lab, tmp_path: Path, proto: str) -> None:
    host_port, guest_port, _ = SERVICES[proto]
    owner = listen(lab, proto, "0.0.0.0", host_port)
    before = lab.firewall()
    xml = web1(proto, host_port, guest_port)
    expected = refusal(lab, f"{proto} *:{host_port}", f"{proto} 0.0.0.0:{host_port}", owner)
    proc = plan(lab, tmp_path, xml)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", expected + "\n")
    proc = lab.cli("apply", "web1", "--connect", node_xml(tmp_path, xml))
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", expected + "\n")
    # a specific address does not help against a wildcard listener
    proc = plan(lab, tmp_path, web1(proto, host_port, guest_port, address=HOST_ADDRESS))
    claim = f"{proto} {HOST_ADDRESS}:{host_port}"
    assert (proc.returncode, proc.stderr) == (1, refusal(lab, claim, f"{proto} 0.0.0.0:{host_port}", owner) + "\n")
    assert lab.firewall() == before and lab.records() == {} and lab.pending() == []


@pytest.mark.parametrize("proto", sorted(SERVICES))
def test_the_hook_logs_the_refusal_under_allow_and_fails_the_start_under_block(lab: Lab, proto: str) -> None:
    host_port, guest_port, answer = SERVICES[proto]
    owner = listen(lab, proto, "0.0.0.0", host_port)
    before = lab.firewall()
    xml = web1(proto, host_port, guest_port)
    expected = refusal(lab, f"{proto} *:{host_port}", f"{proto} 0.0.0.0:{host_port}", owner)
    results = lab.start("web1", xml)  # on_error: allow (the default): the VM starts, the line is logged
    assert [(p.returncode, p.stdout) for p in results] == [(0, "")] * 3
    assert results[-1].stderr.splitlines() == [expected]
    assert {line for p in results for line in p.stderr.splitlines()} == {expected}  # prepare: cold config cache
    assert lab.firewall() == before and lab.records() == {} and lab.pending() == []
    assert lab.probe(proto, host_port) != answer  # the host's process keeps its port

    lab.write_config("on_error: block\n")
    for operation in ("prepare", "started"):
        proc = lab.hook("web1", xml, operation)
        assert (proc.returncode, proc.stdout, proc.stderr.splitlines()) == (BLOCKED, "", [expected]), operation
    assert lab.firewall() == before and lab.records() == {} and lab.pending() == []


@pytest.mark.parametrize("proto", sorted(SERVICES))
def test_a_port_the_config_allows_is_forwarded_past_the_listener(lab: Lab, tmp_path: Path, proto: str) -> None:
    host_port, guest_port, answer = SERVICES[proto]
    listen(lab, proto, "0.0.0.0", host_port)
    lab.write_config(f"on_error: block\nhost_ports:\n  allow: [{proto}/{host_port}]\n")
    xml = web1(proto, host_port, guest_port)
    assert plan(lab, tmp_path, xml).returncode == 0
    start_live(lab, xml)
    assert lab.probe(proto, host_port) == answer  # our DNAT takes the traffic from outside


def test_a_listener_on_loopback_only_is_not_captured(lab: Lab, tmp_path: Path) -> None:
    """Our nat OUTPUT rule leaves 127.0.0.0/8 alone and outside traffic never reaches it."""
    host_port, guest_port, answer = SERVICES["tcp"]
    listen(lab, "tcp", "127.0.0.1", host_port)
    lab.write_config("on_error: block\n")
    xml = web1("tcp", host_port, guest_port)
    assert plan(lab, tmp_path, xml).returncode == 0
    start_live(lab, xml)
    assert lab.probe("tcp", host_port) == answer


def test_dnsmasq_on_the_bridge_address_is_captured_by_a_forward_on_every_address_only(lab: Lab, tmp_path: Path) -> None:
    """A listener on a specific address (libvirt's dnsmasq on 192.168.122.1:53): a forward of 53
    on every local address would take the guests' own DNS queries and is refused; a forward of
    53 on the public address does not touch it, and traffic flows."""
    owner = listen(lab, "udp", BRIDGE_ADDRESS, 53)
    lab.write_config("on_error: block\n")
    everywhere = web1("udp", 53, 5353)
    proc = plan(lab, tmp_path, everywhere)
    expected = refusal(lab, "udp *:53", f"udp {BRIDGE_ADDRESS}:53", owner, other_address=BRIDGE_ADDRESS)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", expected + "\n")
    assert lab.hook("web1", everywhere, "started").returncode == BLOCKED
    assert lab.records() == {}

    public = web1("udp", 53, 5353, address=HOST_ADDRESS)
    assert plan(lab, tmp_path, public).returncode == 0
    start_live(lab, public)
    assert lab.probe("udp", 53) == "guest udp 5353 ping"
