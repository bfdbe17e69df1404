"""Follow the guest: a live forward is valid only while its guest holds the address it targets.
With the watcher running as its service does, both of libvirt's firewall backends, real packets:

- the guest moves to another address (a new lease for its MAC) and another VM takes the old one:
  within 2 s the forward reaches the guest at its new address, and a UDP flow that was open
  (the same client port) is cut from the old address instead of reaching the other VM;
- the guest's lease runs out with no file changing: the forward is gone by the expiry, and when
  dnsmasq gives that address to another MAC, no connection from outside reaches that VM.
"""

import json
import subprocess
import time

import pytest

from tests.conftest import PYTHON
from tests.netns.conftest import DATA, Lab
from tests.netns.fakehost import GUEST_ADDRESS, GUEST_MAC, HOST_ADDRESS
from tests.netns.test_hook import WEB1, guide_xml

pytestmark = [pytest.mark.netns, pytest.mark.parametrize("lab", ["iptables", "nftables"], indirect=True)]

NEW_ADDRESS = "192.168.122.179"
OTHER_MAC = "52:54:00:aa:bb:dd"
UDP_SPORT = 40000
UDP_FROM_A_FIXED_PORT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[3])))
s.settimeout(1.0)
s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
try:
    print(s.recv(200).decode().strip())
except OSError as exc:
    print("ERROR", type(exc).__name__)
"""


def udp_flow(lab: Lab) -> str:
    """One datagram of the same flow (client port UDP_SPORT) to the forwarded UDP port."""
    return lab.exec(lab.client, PYTHON, "-c", UDP_FROM_A_FIXED_PORT, HOST_ADDRESS, "5353", str(UDP_SPORT)).strip()


def other_vm(lab: Lab) -> subprocess.Popen[str]:
    """Another VM on the bridge at the guest's old address, with its own MAC, serving as "other"."""
    ns = lab.add_neighbour(address=GUEST_ADDRESS, mac=OTHER_MAC)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, PYTHON, str(DATA / "guest_server.py"), "other", "443,80", "5353"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    lab.servers.append(proc)  # type: ignore[arg-type]
    return proc


def write_leases(lab: Lab, leases: list[tuple[str, str, int]]) -> None:
    entries = [{"ip-address": a, "mac-address": m, "hostname": "g", "expiry-time": e} for m, a, e in leases]
    lab._write("var/lib/libvirt/dnsmasq/virbr0.status", json.dumps(entries))


def guest_of(lab: Lab) -> set[str]:
    return {f["guest"] for f in lab.records().get(WEB1, {}).get("forwards", [])}


def test_the_forward_follows_the_guest_to_its_new_address(lab: Lab, watcher: subprocess.Popen[str]) -> None:
    for proc in lab.start("web1", guide_xml()):
        assert proc.returncode == 0, proc.stderr
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    assert udp_flow(lab) == "guest udp 5353 ping"  # the flow's conntrack entry: DNATed to .178

    # the guest renews on another address; another VM gets the old one
    lab.ip(lab.guest, "addr", "flush", "dev", "eth0")
    lab.ip(lab.guest, "addr", "add", f"{NEW_ADDRESS}/24", "dev", "eth0")
    lab.ip(lab.guest, "route", "replace", "default", "via", "192.168.122.1")
    other_vm(lab)
    now = int(time.time())
    write_leases(lab, [(GUEST_MAC, NEW_ADDRESS, now + 3600), (OTHER_MAC, GUEST_ADDRESS, now + 3600)])
    took = lab.wait_for("tcp", 20443, "guest tcp 443", within=2.0)
    print(f"{lab.kind}: forward at the new address {took:.2f} s after the lease file changed")
    assert guest_of(lab) == {NEW_ADDRESS}
    assert udp_flow(lab) == "guest udp 5353 ping"  # the old flow was cut: not "other udp ..."
    for _ in range(10):
        assert lab.probe("tcp", 2080, timeout=1.0) == "guest tcp 80"
    assert watcher.poll() is None


def test_the_forward_is_gone_when_the_lease_runs_out(lab: Lab, watcher: subprocess.Popen[str]) -> None:
    expiry = int(time.time()) + 4
    write_leases(lab, [(GUEST_MAC, GUEST_ADDRESS, expiry)])
    for proc in lab.start("web1", guide_xml()):
        assert proc.returncode == 0, proc.stderr
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    while time.time() < expiry + 1.5:  # no file changes: the watcher acts on the expiry itself
        time.sleep(0.1)
    assert lab.probe("tcp", 20443).startswith("ERROR"), "still forwarded after the guest's lease ran out"
    assert lab.records()[WEB1]["status"] == "waiting"
    # dnsmasq hands the address to another VM: nothing from outside reaches it
    lab.ip(lab.guest, "link", "set", "eth0", "down")  # the old guest is gone from the wire
    other_vm(lab)
    write_leases(lab, [(OTHER_MAC, GUEST_ADDRESS, int(time.time()) + 3600)])
    for _ in range(10):
        for port in (20443, 2080):
            assert not lab.probe("tcp", port, timeout=0.5).startswith("other"), "a forward reached the other VM"
        assert not udp_flow(lab).startswith("other")
    assert watcher.poll() is None
