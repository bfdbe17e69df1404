"""Waits that never end silently: a guest whose lease comes after its waiter gave up, and a
waiting domain whose config entry goes meanwhile, with the watcher running as its service does.
Both of libvirt's firewall backends, real packets."""

import subprocess
import time

import pytest

from tests.netns.conftest import Lab
from tests.netns.fakehost import GUEST_ADDRESS, GUEST_MAC, domain_xml
from tests.netns.test_hook import WEB1, guide_xml

pytestmark = [pytest.mark.netns, pytest.mark.parametrize("lab", ["iptables", "nftables"], indirect=True)]


def status_states(lab: Lab) -> set[str]:
    return {
        line.split()[2] for line in lab.cli("status", check=True).stdout.splitlines()[2:] if line.startswith("web1")
    }


def wait_until(predicate, within: float, what: str) -> float:  # type: ignore[no-untyped-def]
    began = time.monotonic()
    while not predicate():
        assert time.monotonic() - began < within, f"no {what} within {within} s"
        time.sleep(0.1)
    return time.monotonic() - began


def test_a_wait_that_timed_out_is_shown_and_the_late_lease_still_makes_the_forward(
    lab: Lab, watcher: subprocess.Popen[str]
) -> None:
    lab.write_config("lease_wait: 1\n")
    lab.write_leases({})
    for proc in lab.start("web1", guide_xml()):
        assert proc.returncode == 0, proc.stderr
    assert status_states(lab) == {"waiting"}
    wait_until(lambda: status_states(lab) == {"timed-out"}, 10.0, "timed-out in status")
    log = (lab.root / "run/libvirt-portfwd/waiter.log").read_text()
    assert log.count("web1: no lease of 52:54:00:aa:bb:cc within lease_wait") == 1, log  # said once
    assert lab.probe("tcp", 20443).startswith("ERROR")

    lab.write_leases({GUEST_MAC: GUEST_ADDRESS})  # the guest renews after all
    took = lab.wait_for("tcp", 20443, "guest tcp 443", within=2.0)
    print(f"{lab.kind}: forward live {took:.2f} s after the late lease (watcher)")
    assert status_states(lab) == {"live"}
    assert watcher.poll() is None


def test_a_config_entry_removed_while_waiting_leaves_no_record_and_no_loop(
    lab: Lab, watcher: subprocess.Popen[str]
) -> None:
    lab.write_config("lease_wait: 20\ndomains:\n  web1:\n    - {proto: tcp, ranges: [{start: 20443, to: 443}]}\n")
    lab.write_leases({})
    xml = domain_xml("web1", WEB1, metadata="")
    for proc in lab.start("web1", xml):
        assert proc.returncode == 0, proc.stderr
    assert set(lab.records()) == {WEB1} and lab.records()[WEB1]["status"] == "waiting"
    lab.write_config("lease_wait: 20\n")  # the admin removes the entry while it waits
    lab.write_leases({GUEST_MAC: GUEST_ADDRESS})
    wait_until(lambda: lab.records() == {}, 5.0, "the waiting record to go")
    before, counts = lab.firewall(), lab.service_counts()
    time.sleep(10.0)  # a loop would rebuild our rules over and over: none, and no record comes back
    assert lab.records() == {} and lab.firewall() == before
    assert counts["rebuilds"] == 0 and lab.service_counts() == counts  # the service's own count: 0
    watcher.terminate()
    _, err = watcher.communicate(timeout=10)
    assert err.count("rules rebuilt") == 0, err
