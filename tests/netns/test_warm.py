"""The warm path (issue 14): with the service running, the hooks hand it their work (warm.py);
the rulesets and records are those the hooks make themselves, and whatever happens to the
service, the hook does the work itself, once.

Both of libvirt's firewall backends, the hook as libvirt runs it (the installed shim), real packets.
"""

import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.netns.conftest import Lab, running_service
from tests.netns.test_hook import WEB1, guide_xml

pytestmark = [pytest.mark.netns, pytest.mark.parametrize("lab", ["iptables", "nftables"], indirect=True)]

Snapshot = tuple[list[str], list[dict[str, object]]]


def records(lab: Lab) -> list[dict[str, object]]:
    domains = lab.root / "run/libvirt-portfwd/domains"
    return [json.loads(p.read_text()) for p in sorted(domains.glob("*.json"))] if domains.exists() else []


def lifecycle(lab: Lab) -> list[Snapshot]:
    """Start, reconnect and stop web1 through the hook; the ruleset and records after each."""
    seen = []
    for step in (lambda: lab.start("web1", guide_xml()), lambda: [lab.hook("web1", guide_xml(), "reconnect")]):
        for proc in step():
            assert proc.returncode == 0 and proc.stdout == "", proc.stderr
        assert lab.probe("tcp", 20443) == "guest tcp 443"
        seen.append((sorted(lab.our_rules()), records(lab)))
    for proc in lab.stop("web1", guide_xml()):
        assert proc.returncode == 0, proc.stderr
    seen.append((sorted(lab.our_rules()), records(lab)))
    return seen


def test_the_service_makes_the_rulesets_and_records_the_hook_makes_itself(lab: Lab) -> None:
    before = lab.firewall()
    itself = lifecycle(lab)
    assert lab.firewall() == before and itself[-1] == ([], [])
    with running_service(lab) as service:
        served = lab.service_counts()["requests"]
        by_service = lifecycle(lab)
        assert lab.service_counts()["requests"] == served + 3  # started, reconnect, stopped (release: nothing left)
        assert service.poll() is None
    assert by_service == itself
    assert lab.firewall() == before


@contextmanager
def holding_the_lock(lab: Lab) -> Iterator[None]:
    fd = os.open(lab.root / "run/libvirt-portfwd/lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def started_in_background(lab: Lab) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        lab.hook_argv("web1", "started"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    assert proc.stdin is not None
    proc.stdin.write(guide_xml())
    proc.stdin.close()
    proc.stdin = None  # sent: communicate() only reads
    return proc


def assert_live_once(lab: Lab, proc: subprocess.Popen[str]) -> None:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out == "", err
    assert err.count("web1: started: live:") == 1, err
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    assert lab.pending() == []
    assert [r["name"] for r in records(lab)] == ["web1"]


def test_a_service_killed_in_the_middle_of_a_request(lab: Lab) -> None:
    """The service wrote the intent and waits for the lock (held here) when it is killed: the
    hook sees it queued, carries out what is pending itself, once; the rules are those of a start."""
    reference = lifecycle(lab)[0]
    (lab.root / "run/libvirt-portfwd").mkdir(parents=True, exist_ok=True)
    with running_service(lab) as service:
        with holding_the_lock(lab):
            hook = started_in_background(lab)
            intent = lab.root / f"run/libvirt-portfwd/intents/{WEB1}.json"
            began = time.monotonic()
            while not intent.exists():  # written by the service: the hook writes none while it waits
                assert hook.poll() is None and time.monotonic() - began < 5.0, "the service queued nothing"
                time.sleep(0.01)
            service.send_signal(signal.SIGKILL)
            service.wait(timeout=10)
            assert hook.poll() is None  # still waiting: for the lock now, to carry out the intent itself
        assert_live_once(lab, hook)
    assert (sorted(lab.our_rules()), records(lab)) == reference


def test_a_service_that_does_not_answer_is_left_behind(lab: Lab) -> None:
    """A stopped service (SIGSTOP: it accepts nothing, answers nothing): the hook gives up after
    its wait and does the work itself; the request, read when the service goes on, is dropped."""
    reference = lifecycle(lab)[0]
    with running_service(lab) as service:
        served = lab.service_counts()["requests"]
        service.send_signal(signal.SIGSTOP)
        try:
            hook = started_in_background(lab)
            assert_live_once(lab, hook)
        finally:
            service.send_signal(signal.SIGCONT)
        rules = sorted(lab.our_rules())
        record = lab.root / f"run/libvirt-portfwd/domains/{WEB1}.json"
        written = record.stat().st_mtime_ns
        began = time.monotonic()
        while lab.service_counts()["requests"] == served:  # the late request is read, and dropped
            assert time.monotonic() - began < 5.0, "the service did not go on"
            time.sleep(0.02)
        assert service.poll() is None
        time.sleep(0.3)  # (what it would have done, it would have done by now)
        assert sorted(lab.our_rules()) == rules and lab.pending() == []
        assert record.stat().st_mtime_ns == written  # not applied again: the record was not rewritten
    assert (sorted(lab.our_rules()), records(lab)) == reference
