"""doctor on a stock Debian 13 host (real libvirtd under systemd), one fault seeded: the admin ran
install.sh but did not restart libvirtd, which started with no qemu hook and so never runs ours.

A VM started then gets no forward (libvirtd runs no hook for it); doctor names the fault
(``hook.seen``, with the daemon's start time and the hook file's time as evidence) and its fix;
the fix run as printed (``systemctl restart libvirtd``) makes libvirtd run the hook, whose
``reconnect`` for the running VM applies its forwards: they answer, and doctor is fine.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Labs, own_portfwd_lab
from tests.e2e.portfwd_lab import PortfwdLab, install
from tests.e2e.scenario import LEASE_TIMEOUT, define_forwarded, http, start, wait_forwards, wait_until
from tests.lab.host import Lab

pytestmark = pytest.mark.e2e

TCP, UDP = 9080, 9353


def install_without_restart(lab: Lab) -> None:
    time.sleep(2.0)  # the hook written well after libvirtd started (/proc/stat's btime is whole seconds)
    install(lab, restart=False)


@pytest.fixture(scope="module")
def box_lab(labs: Labs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortfwdLab]:
    with own_portfwd_lab(labs, tmp_path_factory.mktemp("doctor"), "trixie", "iptables", install_without_restart) as lab:
        yield lab


def doctor(lab: PortfwdLab) -> tuple[int, dict[str, Any]]:
    proc = lab.portfwd("doctor", "--json", check=False)
    return proc.returncode, json.loads(proc.stdout)


def test_doctor_names_a_hook_libvirtd_does_not_run_and_its_fix_works(box_lab: PortfwdLab) -> None:
    lab = box_lab
    web1 = define_forwarded(lab, "web1", TCP, UDP)
    start(lab, web1)
    lab.wait_for_guest(web1, LEASE_TIMEOUT)
    assert not http(lab, TCP).ok, "libvirtd ran the hook although it started before it existed"
    assert lab.status() == []

    code, document = doctor(lab)
    [seen] = [f for f in document["host"] if f["id"] == "hook.seen"]
    print(f"doctor: {seen}")
    assert code == 1 and seen["severity"] == "fail"
    assert "libvirtd (pid " in seen["summary"] and "started before the hook was written" in seen["summary"]
    assert "/etc/libvirt/hooks/qemu.d/libvirt-portfwd written" in seen["evidence"]
    commands = [line for line in seen["fix"].splitlines() if line and not line.startswith("#")]
    assert commands == ["systemctl restart libvirtd"], seen["fix"]

    for command in commands:
        lab.run_in_host(shlex.split(command), timeout=120)
    lab.wait_for_libvirtd()
    wait_forwards(lab, web1, TCP, UDP)  # the reconnect hook of the running VM applied its forwards
    wait_until(lambda: doctor(lab)[0] == 0, 10.0, "doctor to find every forward fine")
    code, document = doctor(lab)
    assert document["summary"]["fine"] == 2 and document["summary"]["not"] == 0, document["summary"]
