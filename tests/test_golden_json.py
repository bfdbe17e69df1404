"""``plan --json`` and ``status --json`` through the CLI, against golden files, and agreeing with
the text each command prints from the same result.

- ``plan``: every case under tests/cases/ as ``libvirt-portfwd --root ROOT plan --json`` runs it
  without root (against an empty firewall); a case that succeeds has ``plan.json``, one that
  is refused fails in both modes alike: exit 1, one line on stderr, nothing on stdout.
- ``status``: a fixed state directory (records of the do-nothing backend, live and waiting;
  pending intents) under a temporary root, the clock fixed: ``tests/golden/status.json`` and
  ``status.txt``.
``REGEN_GOLDEN=1 pytest tests/test_golden_json.py`` rewrites them; review the diff.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from libvirt_portfwd import cli, render, state
from libvirt_portfwd.actions import waiting_record
from libvirt_portfwd.errors import PROG
from libvirt_portfwd.records import Record, save_record
from libvirt_portfwd.report import VERSION, BackendChoice, DomainStatus, StatusResult
from libvirt_portfwd.report import render as render_result
from tests.test_golden import CASES, ERROR_FILE, GOLDEN, case_names, compare, forbid, install_case, run_case

PLAN_GOLDEN = "plan.json"
NOW = 4102444800.0  # the clock status reads (2100-01-01, when the cases' leases expire)


@pytest.fixture(autouse=True)
def as_a_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """plan renders against an empty firewall, as for anyone but root (the tests may run as
    root); the render cache the CLI points at the temporary root is the test's alone."""
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    monkeypatch.setattr(render, "_cache_dir", None)


def run(capsys: pytest.CaptureFixture[str], root: Path, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--root", str(root), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_document(out: str) -> dict[str, Any]:
    """stdout is exactly one JSON object, in the one form we print (json.loads refuses any
    text after the document), of the version documented."""
    document = json.loads(out)
    assert isinstance(document, dict), out
    assert out == json.dumps(document, sort_keys=True, indent=2) + "\n"
    assert document["version"] == VERSION
    return document


def plan_both(capsys: pytest.CaptureFixture[str], name: str, root: Path) -> tuple[tuple[int, str, str], ...]:
    """``plan`` of the case in text and in JSON: (code, stdout, stderr) of each."""
    case = CASES / name
    install_case(case, root)
    xml = str(case / "domain.xml")
    return run(capsys, root, "plan", xml), run(capsys, root, "plan", "--json", xml)


@pytest.mark.parametrize("name", case_names())
def test_plan_json(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES / name
    text, (code, out, err) = plan_both(capsys, name, tmp_path / "root")
    if (case / ERROR_FILE).is_file():
        assert (code, out) == (1, ""), out
        assert err.startswith(f"{PROG}: ") and err.count("\n") == 1, err
        assert text == (code, out, err), "the text mode fails the same way"
        forbid(case, PLAN_GOLDEN)
        return
    assert (code, err) == (0, ""), err
    one_document(out)
    compare(case / PLAN_GOLDEN, out)


def plan_text_of(document: dict[str, Any]) -> str:
    """What the text mode prints, from the JSON document alone."""
    backend = document["backend"]
    targets = ", ".join(f"{f['claim']} -> {f['guest']}:{f['guest_port']}" for f in document["forwards"])
    lines = [
        f"# domain {document['name']} ({document['uuid']}), backend {backend['name']} ({backend['reason']})\n",
        f"# {targets or 'no forwards'}\n",
    ]
    if document["waiting_macs"]:
        macs = ", ".join(document["waiting_macs"])
        lines.append(f"# no address yet for {macs}: start would wait for its lease\n")
    return "".join(lines) + (document["ruleset"] or "")


@pytest.mark.parametrize("name", case_names())
def test_plan_text_and_json_agree(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (code, text, _), (json_code, out, _) = plan_both(capsys, name, tmp_path / "root")
    assert code == json_code
    if code == 0:
        assert text == plan_text_of(one_document(out))


def test_plan_json_of_a_domain_waiting_for_its_lease(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No lease yet: the MAC waited for, no guest address, and no ruleset (null, not empty)."""
    root = tmp_path / "root"
    install_case(CASES / "tcp-single", root)
    (root / "var/lib/libvirt/dnsmasq/virbr0.status").write_text("[]")
    xml = str(CASES / "tcp-single" / "domain.xml")
    code, out, err = run(capsys, root, "plan", "--json", xml)
    assert (code, err) == (0, "")
    document = one_document(out)
    assert document["waiting_macs"] == [f["mac"] for f in document["forwards"]] != []
    assert [f["guest"] for f in document["forwards"]] == [None]
    assert document["ruleset"] is None
    assert run(capsys, root, "plan", xml)[1] == plan_text_of(document)


# --- status --------------------------------------------------------------------------------


def lay_out_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Under a root whose config says backend none: mail1 live, web1 waiting for its lease, an
    intent to remove mail1 asked 42 s ago, and a taken apply of a domain with no name."""
    root = tmp_path / "root"
    live = run_case(CASES / "two-forwards", tmp_path / "live").plan
    waiting_root = tmp_path / "waiting"
    install_case(CASES / "tcp-single", waiting_root)
    (waiting_root / "var/lib/libvirt/dnsmasq/virbr0.status").write_text("[]")
    waiting = run_case(CASES / "tcp-single", waiting_root).plan
    paths = install_case(CASES / "backend-none", root)
    save_record(paths, Record.from_plan(live, "none", state.LIVE))
    save_record(paths, waiting_record(waiting, (CASES / "tcp-single" / "domain.xml").read_bytes()))
    monkeypatch.setattr(time, "time", lambda: NOW - 42.4)
    state.write_intent(paths, live.uuid, state.REMOVE, live.name)
    monkeypatch.setattr(time, "time", lambda: NOW - 1800.6)
    nameless = "00000000-0000-4000-8000-000000000001"
    state.write_intent(paths, nameless, state.APPLY, "", b"<domain/>")
    os.rename(paths.intent(nameless), paths.intent(nameless, taken=True))
    monkeypatch.setattr(time, "time", lambda: NOW)
    return root


def test_status_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = lay_out_state(tmp_path, monkeypatch)
    code, out, err = run(capsys, root, "status", "--json")
    assert (code, err) == (0, "")
    one_document(out)
    compare(GOLDEN / "status.json", out)
    code, text, err = run(capsys, root, "status")
    assert (code, err) == (0, "")
    compare(GOLDEN / "status.txt", text)


def status_rows(document: dict[str, Any]) -> list[list[str]]:
    """The text's rows, from the JSON document alone (split on blanks as tests/e2e read them)."""
    rows = []
    for domain in document["domains"]:
        for f in domain["forwards"]:
            live = "-" if f["live"] is None else "yes" if f["live"] else "NO"
            guest = f"{f['guest'] or '?'}:{f['guest_port']}"
            rows.append([domain["name"], domain["uuid"], domain["state"], *f["claim"].split(), guest, live])
    for p in document["pending"]:
        what = "removal" if p["op"] == state.REMOVE else "apply"
        asked = f"{what} asked {p['age_seconds']} s ago (see the log)"
        rows.append([p["name"] or "?", p["uuid"], "pending", *asked.split()])
    return rows


def backend_line(document: dict[str, Any]) -> str:
    backend = document["backend"]
    if backend["error"] is not None:
        return f"backend: none usable: {backend['error']}"
    return f"backend: {backend['name']} ({backend['reason']})"


def assert_status_agrees(text: str, document: dict[str, Any]) -> None:
    first, header, *rows = text.splitlines()
    assert first == backend_line(document)
    assert header.split() == ["DOMAIN", "UUID", "STATE", "FORWARD", "GUEST", "LIVE"]
    if not document["domains"]:
        assert rows.pop() == "(no forwards recorded)"
    assert [r.split() for r in rows] == status_rows(document)


def test_status_text_and_json_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = lay_out_state(tmp_path, monkeypatch)
    text, out = run(capsys, root, "status")[1], run(capsys, root, "status", "--json")[1]
    document = one_document(out)
    assert {d["state"] for d in document["domains"]} == {state.LIVE, state.WAITING}
    assert len(document["pending"]) == 2
    assert_status_agrees(text, document)


def test_status_json_with_no_backend_usable_and_nothing_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backend that cannot be chosen is data (exit 0, as in the text), not a failure."""
    root = tmp_path / "root"
    config = root / "etc/libvirt-portfwd/config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("backend: nft\n")
    code, out, err = run(capsys, root, "status", "--json")
    assert (code, err) == (0, "")
    document = one_document(out)
    backend = document["backend"]
    assert (backend["name"], backend["reason"]) == (None, None)
    assert backend["error"].startswith(f"{PROG}: ") and "\n" not in backend["error"]
    assert (document["domains"], document["pending"]) == ([], [])
    assert_status_agrees(run(capsys, root, "status")[1], document)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_status_of_unreadable_state_prints_nothing(
    as_json: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record that cannot be read: exit 1, one line on stderr, and no partial table or
    document on stdout (everything is collected before anything is printed)."""
    root = tmp_path / "root"
    paths = install_case(CASES / "backend-none", root)
    os.makedirs(paths.state_dir)
    Path(paths.record("00000000-0000-4000-8000-000000000002")).write_text("{")
    code, out, err = run(capsys, root, "status", *(["--json"] if as_json else []))
    assert (code, out) == (1, "")
    assert err.startswith(f"{PROG}: ") and err.count("\n") == 1, err


def test_live_forwards_render_alike(tmp_path: Path) -> None:
    """Liveness as both renderings show it (the golden's backend none is never live)."""
    plan = run_case(CASES / "source-restricted", tmp_path / "root").plan
    domains = (
        DomainStatus(plan.name, plan.uuid, state.LIVE, plan.forwards, True),
        DomainStatus("down", "00000000-0000-4000-8000-000000000003", state.LIVE, plan.forwards, False),
    )
    result = StatusResult(BackendChoice("iptables", "configured"), domains, ())
    document = one_document(render_result(result, as_json=True))
    assert [d["live"] for d in document["domains"]] == [True, False]
    assert [{f["live"] for f in d["forwards"]} for d in document["domains"]] == [{True}, {False}]
    assert_status_agrees(render_result(result, as_json=False), document)


# --- doctor --json -------------------------------------------------------------------------------


def test_doctor_json_and_text(tmp_path: Path) -> None:
    """``doctor``'s two renderings of one report, against tests/golden/doctor.json and
    doctor.txt: the firewall findings computed from a listing captured in a namespace (our
    nftables backend live, and an admin's inet filter table dropping forwarded packets), the host
    and forward findings as the host checks word them."""
    from ipaddress import IPv4Address

    from libvirt_portfwd import doctor
    from libvirt_portfwd.backends import nftables_rules
    from libvirt_portfwd.backends.foreign import foreign_findings
    from libvirt_portfwd.backends.nft_listing import parse
    from libvirt_portfwd.findings import FAIL, FIREWALL, INFO, OK, Finding, firewall
    from libvirt_portfwd.model import Forward
    from libvirt_portfwd.paths import Paths
    from libvirt_portfwd.survey import DomainView, Survey

    uuid, mac = "6f1d0c9a-6a3b-4c55-9a3e-2f0b6f6a1c01", "52:54:00:aa:bb:cc"
    listing = parse((Path(__file__).parent / "data/listings/nftables-foreign-drop.nft.json").read_text())
    backend = firewall(
        "rules.backend", OK, "backend nftables (auto: libvirt runs network default with its nftables firewall)"
    )
    walls = [backend, *nftables_rules.findings(listing, {uuid: "web1"}), *foreign_findings(listing, "nftables")]
    host = [
        Finding("hook.installed", OK, "host", "the qemu hook is installed"),
        Finding("config.valid", OK, "host", "the config loads"),
        Finding(
            "sysctl.ip_forward", OK, "host", "the host routes packets to its guests", "/proc/sys/net/ipv4/ip_forward: 1"
        ),
        *(f for f in walls if f.subject == FIREWALL),
    ]
    tcp = Forward(
        "tcp",
        IPv4Address("203.0.113.10"),
        None,
        (),
        20443,
        20443,
        443,
        mac,
        "virbr0",
        IPv4Address("192.168.122.178"),
        "metadata",
    )
    udp = Forward("udp", None, None, (), 5353, 5353, 5353, mac, "virbr0", IPv4Address("192.168.122.178"), "metadata")
    subject = "web1 tcp 203.0.113.10:20443"
    view = DomainView(
        Survey(Paths(root=str(tmp_path))),
        uuid,
        "web1",
        Record(uuid, "web1", "nftables", "live", [tcp, udp]),
        None,
        None,
    )
    domain = [
        Finding("record.live", OK, "web1", "live (nftables): 2 forwards"),
        *(f for f in walls if f.subject == "web1"),
    ]
    forwards = [
        doctor.ForwardReport(
            tcp,
            [
                Finding("lease.current", OK, subject, "192.168.122.178 is 52:54:00:aa:bb:cc's current lease"),
                Finding("host.listener", OK, subject, "no host process listens on its ports"),
                Finding(
                    "guest.answers",
                    FAIL,
                    subject,
                    "192.168.122.178:443 refuses connections",
                    "connect: refused",
                    "# look inside the guest",
                ),
            ],
        ),
        doctor.ForwardReport(
            udp, [Finding("guest.answers", INFO, "web1 udp *:5353", "not checked: UDP has no handshake to try")]
        ),
    ]
    report = doctor.Report(host, [doctor.DomainReport(view, domain, forwards)])
    document = one_document(doctor.render_json(report))
    assert document["ok"] is False and sorted(document["summary"]["failing"]) == ["guest.answers", "path.foreign_drop"]
    compare(GOLDEN / "doctor.json", doctor.render_json(report))
    compare(GOLDEN / "doctor.txt", doctor.render_text(report))
