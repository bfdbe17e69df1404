"""Follow the guest (issue 14, acceptance 1): a live forward is valid only while its guest holds the
address it targets. With the watcher running as its service does, both of libvirt's firewall
backends, real packets, and across each change a TCP connection and a UDP flow held open from the
client through the forward (tests/data/held_client.py):

- (a) a new lease for the VM's MAC with another address, (b) the network's reservation changed and
  then the guest's lease renewed on it: within 2 s of the lease file changing, new connections
  reach the guest at its new address (in (b) not before the lease says so);
- (c) the lease running out with no file changing, its address then leased to another MAC: the
  forward is gone by the lease's expiry time, and nothing from outside reaches the other VM.

"Old flows to the old address are cut", as asserted in each case: the host's conntrack holds no
entry of the client's flows whose replies come from the old address (``conntrack -L
--reply-src``), the held TCP connection's next line gets a reset or no answer, the held UDP flow's
next datagram goes where the forward points now (the guest's new address; in (c) nowhere), and the
VM at the old address never sees a packet of either (counted by an nftables rule in its namespace).
"""

import json
import subprocess
import time
from collections.abc import Callable

import pytest

from libvirt_portfwd.leases import EXPIRY_MARGIN
from tests.conftest import PYTHON
from tests.netns.conftest import DATA, Lab, port_forward, portfwd_metadata
from tests.netns.fakehost import CLIENT_ADDRESS, GUEST_ADDRESS, GUEST_MAC, HOST_ADDRESS, domain_xml
from tests.netns.test_hook import WEB1, WEB2, guide_xml

pytestmark = [pytest.mark.netns, pytest.mark.parametrize("lab", ["iptables", "nftables"], indirect=True)]

NEW_ADDRESS = "192.168.122.179"
OTHER_MAC = "52:54:00:aa:bb:dd"
FOLLOW_WITHIN = 2.0  # seconds from a lease file's change to the forward on the new address
HOUR = 3600


class Held:
    """One TCP connection or UDP flow from the client through the forward, held open."""

    def __init__(self, lab: Lab, proto: str, port: int) -> None:
        argv = [*["ip", "netns", "exec", lab.client], PYTHON, str(DATA / "held_client.py")]
        self.proc = subprocess.Popen(
            [*argv, proto, HOST_ADDRESS, str(port), "1.0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        lab.servers.append(self.proc)  # killed with the lab
        assert self.proc.stdout is not None
        ready, sport, self.first = self.proc.stdout.readline().strip().split(maxsplit=2)
        assert ready == "ready"
        self.proto, self.sport = proto, int(sport)

    def send(self, line: str) -> str:
        """What comes back on the held socket for one line ("ERROR <why>" when nothing does)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()


def hold_flows(lab: Lab) -> tuple[Held, Held]:
    """A TCP connection to 20443 (guest 443) and a UDP flow to 5353, open and answered by the guest,
    their conntrack entries DNATed to its address."""
    tcp, udp = Held(lab, "tcp", 20443), Held(lab, "udp", 5353)
    assert tcp.first == "guest tcp 443"
    assert udp.first == "guest udp 5353 hello"
    assert tcp.send("before") == "guest tcp 443 before"
    assert udp.send("before") == "guest udp 5353 before"
    assert {sport_of(entry) for entry in flows_to(lab, GUEST_ADDRESS)} >= {tcp.sport, udp.sport}
    return tcp, udp


def flows_to(lab: Lab, address: str) -> list[str]:
    """The host's conntrack entries of the client's flows whose replies come from ``address``: the
    ones DNATed to it."""
    out = lab.exec(lab.host, "conntrack", "-L", "--orig-src", CLIENT_ADDRESS, "--reply-src", address)
    return [line for line in out.splitlines() if line.strip()]


def sport_of(entry: str) -> int:
    return int(next(word for word in entry.split() if word.startswith("sport=")).split("=")[1])


def until(condition: Callable[[], bool], deadline: float, what: str) -> None:
    """Wait (functionally) until ``condition`` holds; fail at ``deadline`` (time.monotonic())."""
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not so in time: {what}")
        time.sleep(0.05)


def move_guest(lab: Lab, address: str) -> None:
    """The guest's interface takes ``address`` instead of its old one (what its DHCP client does)."""
    lab.ip(lab.guest, "addr", "flush", "dev", "eth0")
    lab.ip(lab.guest, "addr", "add", f"{address}/24", "dev", "eth0")
    lab.ip(lab.guest, "route", "replace", "default", "via", "192.168.122.1")


class OtherVM:
    """Another VM on the bridge at the guest's old address, with its own MAC, serving as "other";
    an nftables rule in its namespace counts every packet from the client, and those of the held
    flows apart."""

    def __init__(self, lab: Lab, held: tuple[Held, Held]) -> None:
        self.lab, self.ns = lab, lab.add_neighbour(address=GUEST_ADDRESS, mac=OTHER_MAC)
        tcp, udp = held
        lab.exec(
            self.ns,
            "nft",
            "-f",
            "-",
            input=f"""table ip arrivals {{
  chain seen {{
    type filter hook prerouting priority -300; policy accept;
    ip saddr {CLIENT_ADDRESS} tcp sport {tcp.sport} counter comment "held-tcp"
    ip saddr {CLIENT_ADDRESS} udp sport {udp.sport} counter comment "held-udp"
    ip saddr {CLIENT_ADDRESS} counter comment "client"
  }}
}}
""",
        )
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, PYTHON, str(DATA / "guest_server.py"), "other", "443,80", "5353", "hold"],
            stdout=subprocess.PIPE,
            text=True,
        )
        lab.servers.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        # the host's neighbour entry of the old address named the guest's MAC: as after the kernel's
        # probes, it names the other VM's (else packets to the old address would not reach it)
        lab.ip(lab.host, "neigh", "flush", "to", GUEST_ADDRESS)

    def arrivals(self) -> dict[str, int]:
        """Packets from the client seen by the other VM: held-tcp, held-udp, client (all of them)."""
        listing = json.loads(self.lab.exec(self.ns, "nft", "-j", "list", "table", "ip", "arrivals"))
        counts = {}
        for item in listing["nftables"]:
            rule = item.get("rule")
            if rule:
                counter = next(e["counter"] for e in rule["expr"] if "counter" in e)
                counts[rule["comment"]] = counter["packets"]
        return counts


def write_leases(lab: Lab, leases: list[tuple[str, str, int]]) -> None:
    """The lease status file, rewritten by rename as libvirt's leaseshelper does."""
    entries = [{"ip-address": a, "mac-address": m, "hostname": "g", "expiry-time": e} for m, a, e in leases]
    lab._write("var/lib/libvirt/dnsmasq/virbr0.status", json.dumps(entries))


def guest_of(lab: Lab, uuid: str = WEB1) -> set[str]:
    return {f["guest"] for f in lab.records().get(uuid, {}).get("forwards", [])}


def start_web1(lab: Lab) -> None:
    for proc in lab.start("web1", guide_xml()):
        assert proc.returncode == 0, proc.stderr
    assert lab.probe("tcp", 20443) == "guest tcp 443"


def assert_followed(lab: Lab, held: tuple[Held, Held], other: OtherVM, changed: float) -> None:
    """After the lease file changed at ``changed`` (time.monotonic()), the guest now at NEW_ADDRESS
    and the other VM at its old one: the forward follows within 2 s, the old flows are cut."""
    lab.wait_for("tcp", 20443, "guest tcp 443", within=FOLLOW_WITHIN)
    print(f"{lab.kind}: forward at the new address {time.monotonic() - changed:.2f} s after the lease file changed")
    deadline = changed + FOLLOW_WITHIN
    until(lambda: guest_of(lab) == {NEW_ADDRESS}, deadline, "recorded at the new address")  # after its rules
    until(lambda: not flows_to(lab, GUEST_ADDRESS), deadline, "conntrack entries to the old address cut")
    tcp, udp = held
    assert tcp.send("after") in ("ERROR ConnectionResetError", "ERROR timeout")  # a reset, never "other"
    assert udp.send("after") == "guest udp 5353 after"  # the same flow, forwarded afresh: to the new address
    for _ in range(10):
        assert lab.probe("tcp", 2080, timeout=1.0) == "guest tcp 80"
    arrivals = other.arrivals()
    assert arrivals["held-tcp"] == arrivals["held-udp"] == 0, arrivals
    assert flows_to(lab, GUEST_ADDRESS) == []
    assert udp.sport in {sport_of(entry) for entry in flows_to(lab, NEW_ADDRESS)}


def test_a_new_lease_with_another_address(lab: Lab, watcher: subprocess.Popen[str]) -> None:
    start_web1(lab)
    held = hold_flows(lab)
    move_guest(lab, NEW_ADDRESS)  # the guest renews on another address; another VM gets the old one
    other = OtherVM(lab, held)
    expiry = int(time.time()) + HOUR
    changed = time.monotonic()
    write_leases(lab, [(GUEST_MAC, NEW_ADDRESS, expiry), (OTHER_MAC, GUEST_ADDRESS, expiry)])
    assert_followed(lab, held, other, changed)
    assert watcher.poll() is None


WEB2_MAC = "52:54:00:aa:bb:ee"
WEB2_ADDRESS, WEB2_NEW_ADDRESS = "192.168.122.180", "192.168.122.181"


def test_b_reservation_changed_then_the_lease_renewed(lab: Lab, watcher: subprocess.Popen[str]) -> None:
    expiry = int(time.time()) + HOUR
    lab.reservations[GUEST_MAC] = GUEST_ADDRESS
    lab.write_network()
    write_leases(lab, [(GUEST_MAC, GUEST_ADDRESS, expiry), (WEB2_MAC, WEB2_ADDRESS, expiry)])
    start_web1(lab)
    # web2 (no guest behind it) is the witness that the watcher has acted on the files
    web2 = domain_xml("web2", WEB2, mac=WEB2_MAC, metadata=portfwd_metadata(port_forward("tcp", [(3080, 80)])))
    for proc in lab.start("web2", web2):
        assert proc.returncode == 0, proc.stderr
    held = hold_flows(lab)

    # the admin changes the reservation (libvirt rewrites the network's status); the guest has not
    # renewed: the forward stays on the address it holds. Then web2's lease moves: once the watcher
    # re-pointed web2, it has planned web1 again with the new reservation too, and left it.
    lab.reservations[GUEST_MAC] = NEW_ADDRESS
    lab.write_network()
    assert f"ip='{NEW_ADDRESS}'" in (lab.root / "run/libvirt/network/default.xml").read_text()
    write_leases(lab, [(GUEST_MAC, GUEST_ADDRESS, expiry), (WEB2_MAC, WEB2_NEW_ADDRESS, expiry)])
    until(lambda: guest_of(lab, WEB2) == {WEB2_NEW_ADDRESS}, time.monotonic() + FOLLOW_WITHIN, "web2 re-pointed")
    assert guest_of(lab) == {GUEST_ADDRESS}
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    tcp, udp = held
    assert tcp.send("reserved") == "guest tcp 443 reserved"  # not cut: the guest is still there
    assert udp.send("reserved") == "guest udp 5353 reserved"

    # the guest renews and gets its new reservation; another VM gets the old address
    move_guest(lab, NEW_ADDRESS)
    other = OtherVM(lab, held)
    changed = time.monotonic()
    renewed = [(GUEST_MAC, NEW_ADDRESS, expiry), (OTHER_MAC, GUEST_ADDRESS, expiry)]
    write_leases(lab, [*renewed, (WEB2_MAC, WEB2_NEW_ADDRESS, expiry)])
    assert_followed(lab, held, other, changed)
    assert guest_of(lab, WEB2) == {WEB2_NEW_ADDRESS}
    assert watcher.poll() is None


def test_c_the_lease_runs_out_and_its_address_goes_to_another_mac(lab: Lab, watcher: subprocess.Popen[str]) -> None:
    expiry = int(time.time()) + EXPIRY_MARGIN + 6
    write_leases(lab, [(GUEST_MAC, GUEST_ADDRESS, expiry)])
    start_web1(lab)
    held = hold_flows(lab)
    assert time.time() < expiry - EXPIRY_MARGIN, "the start took too long to test the expiry"
    removed = None
    while time.time() < expiry:  # no file changes: the watcher acts on the expiry itself
        if removed is None and lab.records()[WEB1]["status"] == "waiting":
            removed = time.time()
            print(f"{lab.kind}: forward removed {expiry - removed:.2f} s before the lease's expiry time")
        time.sleep(0.05)
    # the lease's expiry time: the forward is gone, and the old flows with it
    assert lab.probe("tcp", 20443, timeout=0.5).startswith("ERROR"), "still forwarded when the lease ran out"
    assert flows_to(lab, GUEST_ADDRESS) == []
    assert lab.records()[WEB1]["status"] == "waiting"

    # dnsmasq hands the address to another VM: nothing from outside reaches it
    lab.ip(lab.guest, "link", "set", "eth0", "down")  # the old guest is gone from the wire
    other = OtherVM(lab, held)
    write_leases(lab, [(OTHER_MAC, GUEST_ADDRESS, int(time.time()) + HOUR)])
    tcp, udp = held
    for _ in range(5):
        for port in (20443, 2080):
            assert lab.probe("tcp", port, timeout=0.5).startswith("ERROR")
        assert lab.probe("udp", 5353, timeout=0.5).startswith("ERROR")
        assert tcp.send("after").startswith("ERROR")
        assert udp.send("after").startswith("ERROR")
    assert other.arrivals() == {"held-tcp": 0, "held-udp": 0, "client": 0}
    assert flows_to(lab, GUEST_ADDRESS) == []
    assert lab.records()[WEB1]["status"] == "waiting"
    assert watcher.poll() is None
