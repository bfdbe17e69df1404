"""What the end-to-end scenarios share: probes from the client, waits, timings.

Every wait is a functional bound (a guest's lease, a rule's coming or going), never a speed
target: timings are printed and summed up at the end of the run ("e2e lab timings").
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.e2e.portfwd_lab import PortfwdLab, port_forward, portfwd_metadata, wait_for_answer
from tests.lab.host import Guest, ProbeResult

HOST = "203.0.113.1"  # the lab host's uplink address (Lab.host_addr)
PAYLOAD = b"ping"
LEASE_TIMEOUT = 90.0  # functional bounds, not speed targets
FORWARD_TIMEOUT = 30.0
GONE_TIMEOUT = 10.0
PROBE_TIMEOUT = 1.0


def note(lab: PortfwdLab, key: str, seconds: float, detail: str = "") -> None:
    """Print a timing and keep it for the run's summary."""
    lab.timings[key] = seconds
    print(f"{key}: {seconds:.2f} s{' (' + detail + ')' if detail else ''}", flush=True)


def http(lab: PortfwdLab, port: int, timeout: float = PROBE_TIMEOUT) -> ProbeResult:
    """GET / from the client to the lab host's public address."""
    return lab.http_probe(lab.client_ns, lab.host_addr, port, timeout)


def udp(lab: PortfwdLab, port: int, timeout: float = PROBE_TIMEOUT) -> ProbeResult:
    return lab.udp_probe(lab.client_ns, lab.host_addr, port, PAYLOAD, timeout)


def wait_http(lab: PortfwdLab, port: int, guest: Guest, guest_port: int, timeout: float = FORWARD_TIMEOUT) -> float:
    return wait_for_answer(
        lambda: http(lab, port),
        guest.http_body(guest_port).encode(),
        timeout,
        f"client -> {lab.host_addr}:{port} (tcp, {guest.name}:{guest_port})",
    )


def wait_udp(lab: PortfwdLab, port: int, guest: Guest, guest_port: int, timeout: float = FORWARD_TIMEOUT) -> float:
    return wait_for_answer(
        lambda: udp(lab, port),
        guest.udp_reply(guest_port, PAYLOAD),
        timeout,
        f"client -> {lab.host_addr}:{port} (udp, {guest.name}:{guest_port})",
    )


def start(lab: PortfwdLab, guest: Guest) -> tuple[float, float]:
    """virsh start, then wait for the first NIC's new lease: (virsh start s, start -> lease s)."""
    began = time.monotonic()
    virsh_start = lab.start_domain(guest.name)
    guest.address = lab.wait_for_lease(guest.macs[0], LEASE_TIMEOUT, domain=guest.name)
    return virsh_start, time.monotonic() - began


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - began


def rules_of(lab: PortfwdLab, uuid: str) -> list[str]:
    return [line for line in lab.our_rules() if uuid in line]


def status_rows(lab: PortfwdLab, domain: str) -> list[tuple[str, str, str, str]]:
    return sorted((r.forward, r.guest, r.state, r.live) for r in lab.status() if r.domain == domain)


def define_forwarded(lab: PortfwdLab, name: str, tcp: int, udp_port: int) -> Guest:
    """A lab guest defined with two forwards in its metadata: TCP ``tcp`` -> 80, UDP ``udp_port`` -> 5353."""
    forwards = portfwd_metadata(port_forward("tcp", [(tcp, 80)]), port_forward("udp", [(udp_port, 5353)]))
    return lab.define_guest(name, metadata=forwards)


def wait_forwards(lab: PortfwdLab, guest: Guest, tcp: int, udp_port: int, timeout: float = LEASE_TIMEOUT) -> float:
    """Both forwards of define_forwarded answer from the client; the seconds until they did."""
    began = time.monotonic()
    wait_http(lab, tcp, guest, 80, timeout)
    wait_udp(lab, udp_port, guest, 5353, timeout)
    return time.monotonic() - began
