"""Investigate one neighbour beside libvirt-portfwd on one stock host (issue 15), and write what
happened to a directory: ``python3 -m tests.e2e.probe_neighbours NEIGHBOUR RELEASE BACKEND OUT``
(as root, from the repo root). Not a test: it records, it does not assert. The findings in
NEIGHBOURS-FINDINGS.md come from its output; tests/e2e/test_neighbours.py asserts what works.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from tests.e2e import neighbours
from tests.e2e.portfwd_lab import PortfwdLab, install, port_forward, portfwd_metadata, uninstall
from tests.e2e.scenario import LEASE_TIMEOUT, PAYLOAD, http, start, udp
from tests.lab.host import Lab
from tests.lab.proc import LabError

TCP, UDP = 9080, 9353
CLIENT_BODY = "client-web\n"


def full_ruleset(lab: Lab) -> str:
    save = lab.run_in_host(["iptables-save"], check=False).stdout
    nft = lab.run_in_host(["nft", "list", "ruleset"], check=False).stdout
    return "### iptables-save\n" + "\n".join(neighbours.normalise(save)) + "\n### nft list ruleset\n" + nft


def probe(lab: PortfwdLab, guest: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    want_tcp, want_udp = guest.http_body(80).encode(), guest.udp_reply(5353, PAYLOAD)
    result: dict[str, Any] = {"tcp": False, "udp": False}
    while time.monotonic() < deadline and not (result["tcp"] and result["udp"]):
        if not result["tcp"]:
            r = http(lab, TCP)
            result["tcp"], result["tcp_last"] = r.answer == want_tcp, r.error or repr(r.answer)
        if not result["udp"]:
            r = udp(lab, UDP)
            result["udp"], result["udp_last"] = r.answer == want_udp, r.error or repr(r.answer)
        time.sleep(0.3)
    result["other_tcp_80_closed"] = not http(lab, 80).ok
    result["other_udp_5354_closed"] = not udp(lab, 5354).ok
    if lab.box.run(["systemctl", "is-active", "docker.service"], check=False).stdout.strip() == "active":
        result["docker_port"] = neighbours.docker_answers(lab)
    return result


def doctor(lab: PortfwdLab) -> dict[str, Any]:
    proc = lab.portfwd("doctor", "--json", check=False)
    try:
        document = json.loads(proc.stdout)
    except ValueError:
        return {"exit": proc.returncode, "raw": proc.stdout[-2000:], "stderr": proc.stderr[-2000:]}
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "id" in node and node.get("severity", "ok") != "ok":
                found.append({k: node.get(k) for k in ("id", "severity", "summary", "evidence", "fix")})
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return {"exit": proc.returncode, "summary": document.get("summary"), "not_ok": found}


def fetches(lab: PortfwdLab, name: str) -> list[str]:
    return [line.strip() for line in lab.serial_log(name).splitlines() if "fetch http" in line][-3:]


def main(name: str, release: str, backend: str, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    neighbour = neighbours.NEIGHBOURS[name]
    report: dict[str, Any] = {"neighbour": name, "release": release, "backend": backend, "steps": []}
    snapshots: dict[str, list[str]] = {}

    def save() -> None:
        (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")

    def step(key: str, value: Any) -> None:
        report[key] = value
        report["steps"].append(key)
        print(f"{name} {release}-{backend}: {key}: {json.dumps(value)[:600]}", flush=True)
        save()

    def dump(label: str, lab: Lab) -> None:
        (out / f"ruleset-{label}.txt").write_text(full_ruleset(lab))
        snapshots[label] = neighbours.rules(lab, name)
        (out / f"neighbour-{label}.txt").write_text("\n".join(snapshots[label]) + "\n")

    def prepare(lab: Lab) -> None:
        began = time.monotonic()
        neighbour.setup(lab)
        step("setup_seconds", round(time.monotonic() - began, 1))
        dump("0-neighbour-before-install", lab)
        install(lab)

    workdir = Path(tempfile.mkdtemp(prefix=f"probe-{name}-", dir="/var/tmp"))
    lab = PortfwdLab(workdir=workdir, release=release, firewall_backend=backend, before_libvirtd=prepare)
    server: subprocess.Popen[bytes] | None = None
    try:
        lab.start()
        versions = lab.run_in_host(
            ["dpkg-query", "-W", "-f=${Package} ${Version}\\n", "docker.io", "firewalld", "ufw", "nftables",
             "libvirt-daemon"], check=False).stdout  # fmt: skip
        step("versions", versions.splitlines())
        www = workdir / "client-www"
        www.mkdir()
        (www / "index.html").write_text(CLIENT_BODY)
        server = subprocess.Popen(
            ["ip", "netns", "exec", lab.client_ns, "python3", "-m", "http.server", str(TCP), "-d", str(www)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        dump("1-before-forward", lab)
        forwards = portfwd_metadata(port_forward("tcp", [(TCP, 80)]), port_forward("udp", [(UDP, 5353)]))
        fetch = f"portfwd.fetch=http://{lab.client_addr}:{TCP}/"  # the guest's own outgoing connection
        guest = lab.define_guest("web1", metadata=forwards, extra_cmdline=fetch)
        step("guest_defined", True)
        try:
            start(lab, guest)
            lab.wait_for_guest(guest, LEASE_TIMEOUT)
            step("lease", guest.address)
        except (LabError, AssertionError) as exc:
            step("lease", f"FAILED: {exc}"[:1500])
            dump("2-forward", lab)
            step("doctor_1", doctor(lab))
            return 0
        step("forward_1", probe(lab, guest, 30.0))
        dump("2-forward", lab)
        step("doctor_1", doctor(lab))
        step("status_1", lab.portfwd("status", check=False).stdout.splitlines())
        step("guest_fetch_1", fetches(lab, "web1"))
        began = time.monotonic()
        try:
            neighbour.reload(lab)
            step("reload", f"{neighbour.reload_command}: {time.monotonic() - began:.1f} s")
        except LabError as exc:
            step("reload", f"FAILED: {exc}"[:1500])
        time.sleep(3.0)
        step("forward_2_after_reload", probe(lab, guest, 15.0))
        step("guest_fetch_2", fetches(lab, "web1"))
        dump("3-after-reload", lab)
        step("doctor_2", doctor(lab))
        fixes = [f["fix"] for f in report["doctor_2"].get("not_ok", []) if f.get("fix") and f["id"].startswith("path")]
        if fixes and not (report["forward_2_after_reload"]["tcp"] and report["forward_2_after_reload"]["udp"]):
            applied = []
            for fix in fixes:
                for line in fix.splitlines():
                    if line.strip() and not line.startswith("#"):
                        r = lab.run_in_host(shlex.split(line.split("   (")[0]), check=False)
                        applied.append(f"{line}: exit {r.returncode} {r.stderr.strip()}")
            step("doctor_fix_applied", applied)
            step("forward_3_after_fix", probe(lab, guest, 15.0))
            time.sleep(2.0)
            step("guest_fetch_3", fetches(lab, "web1"))
            dump("4-after-fix", lab)
        lab.destroy("web1")
        time.sleep(1.0)
        dump("5-after-destroy", lab)
        step("our_rules_after_destroy", lab.our_rules())
        step(
            "neighbour_same_after_destroy_as_before_forward",
            snapshots["5-after-destroy"] == snapshots["1-before-forward"],
        )
        step("neighbour_after_destroy_vs_after_reload", snapshots["5-after-destroy"] == snapshots["3-after-reload"])
        lab.stop_watcher()
        lab.undefine("web1")
        lab.guests.pop("web1", None)
        step("uninstall_errors", uninstall(lab))
        dump("6-after-uninstall", lab)
        step("neighbour_same_after_uninstall_as_before_install",
             snapshots["6-after-uninstall"] == snapshots["0-neighbour-before-install"])  # fmt: skip
    except Exception as exc:  # record it
        step("error", f"{exc}\n{traceback.format_exc()}"[-4000:])
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        try:
            lab.close()
        except LabError as exc:
            step("close_error", str(exc)[:1500])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])))
