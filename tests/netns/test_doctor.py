"""``libvirt-portfwd doctor`` against a libvirt-like host with real packets, under both of
libvirt's firewall backends: a working forward is fine; each fault seeded on purpose is reported
by its finding id with a fix, and the fix applied as printed (its commands run inside the host
namespace, ``libvirt-portfwd`` being the CLI on the lab's root) makes the forward work again.
Assertions read ``--json``."""

import json
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from libvirt_portfwd.shim import render
from tests.conftest import PYTHON, REPO
from tests.netns.conftest import Lab, port_forward, portfwd_metadata
from tests.netns.fakehost import GUEST_ADDRESS, GUEST_MAC, HOST_ADDRESS, domain_xml

pytestmark = pytest.mark.netns
BOTH = pytest.mark.parametrize("lab", ["iptables", "nftables"], indirect=True)  # libvirt's firewall backends

WEB1 = "6f1d0c9a-6a3b-4c55-9a3e-2f0b6f6a1c01"


NFT_OK = {("rules.table", "ok"), ("rules.dispatch", "ok"), ("rules.gate", "ok")}


def web1_xml() -> str:
    return domain_xml(
        "web1",
        WEB1,
        metadata=portfwd_metadata(
            port_forward("tcp", [(20443, 443)], address=HOST_ADDRESS),
            port_forward("udp", [(5353, None)], address=HOST_ADDRESS),
        ),
    )


def install_hooks(lab: Lab, lib: Path = REPO) -> None:
    """The hooks as install.sh writes them (a temporary file renamed into place), into the lab's
    root, running the code in ``lib`` (this checkout)."""
    for kind in ("qemu", "network"):
        path = lab.root / f"etc/libvirt/hooks/{kind}.d/libvirt-portfwd"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".libvirt-portfwd.new")
        tmp.write_text(render(kind, "", str(lib)))
        tmp.chmod(0o755)
        tmp.replace(path)


def start_web1(lab: Lab) -> None:
    install_hooks(lab)
    for proc in lab.start("web1", web1_xml()):
        assert proc.returncode == 0, proc.stderr
    assert lab.probe("tcp", 20443) == "guest tcp 443"


def doctor(lab: Lab, *args: str) -> tuple[int, dict[str, Any]]:
    proc = lab.cli("doctor", "--json", *args)
    assert proc.stderr == "", proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def findings(document: dict[str, Any]) -> list[dict[str, str]]:
    """Every finding of the document, top down."""
    found = list(document["host"])
    for domain in document["domains"]:
        found += domain["findings"]
        for forward in domain["forwards"]:
            found += forward["findings"]
    return found


def failing(document: dict[str, Any]) -> list[dict[str, str]]:
    return [f for f in findings(document) if f["severity"] == "fail"]


def node_uri(tmp_path: Path) -> str:
    """libvirt's test driver with web1 running (for the `apply` a fix names)."""
    path = tmp_path / "node.xml"
    path.write_text("<node>" + web1_xml().replace("type='qemu'", "type='test'") + "</node>")
    return f"test://{path}"


def apply_fix(lab: Lab, finding: dict[str, str], uri: str) -> None:
    """The fix's commands as printed, one by one, in the host namespace; ``libvirt-portfwd``
    is the CLI on the lab's root (and asks the test driver for domains)."""
    commands = [line for line in finding["fix"].splitlines() if line and not line.startswith("#")]
    assert commands, f"{finding['id']}: no command in its fix {finding['fix']!r}"
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "libvirt-portfwd":
            proc = lab.cli(*argv[1:], *(["--connect", uri] if argv[1] in ("apply", "sync") else []))
            assert proc.returncode == 0, proc.stderr
        else:
            lab.exec(lab.host, *argv)


@BOTH
def test_a_working_forward_is_fine(lab: Lab) -> None:
    start_web1(lab)
    code, document = doctor(lab)
    assert code == 0 and failing(document) == [] and document["ok"] is True
    got = {(f["id"], f["severity"]) for f in findings(document)}
    assert {
        ("hook.installed", "ok"),
        ("hook.network", "ok"),
        ("daemon.running", "warn"),  # no libvirtd in the lab: a warning, not a failure
        ("config.valid", "ok"),
        ("sysctl.ip_forward", "ok"),
        ("record.live", "ok"),
        ("lease.current", "ok"),
        ("guest.answers", "ok"),
        ("guest.answers", "info"),  # UDP: not checked
        ("rules.backend", "ok"),
        ("rules.hooks", "ok"),
        ("rules.domain", "ok"),
        ("path.foreign", "ok"),
        ("host.listener", "ok"),
        ("counters.translated", "info"),
        ("counters.accepted", "info"),
    } | (
        {("rules.table", "ok"), ("rules.dispatch", "ok"), ("rules.gate", "ok")} if lab.kind == "nftables" else set()
    ) == got
    backend = next(f for f in findings(document) if f["id"] == "rules.backend")
    assert backend["summary"].startswith(f"backend {lab.kind} (auto: libvirt runs network default with its {lab.kind}")
    [domain] = document["domains"]
    assert (domain["name"], domain["uuid"], domain["status"], domain["ok"]) == ("web1", WEB1, "live", True)
    tcp, udp = domain["forwards"]
    assert tcp["forward"] == f"tcp {HOST_ADDRESS}:20443 -> {GUEST_ADDRESS}:443" and tcp["ok"] is True
    assert udp["findings"][-1]["summary"] == "not checked: UDP has no handshake to try"
    assert document["summary"] == {"forwards": 2, "fine": 2, "not": 0, "failing": []}
    lease = next(f for f in findings(document) if f["id"] == "lease.current")
    assert f'"mac-address": "{GUEST_MAC}", "ip-address": "{GUEST_ADDRESS}"' in lease["evidence"]
    # the text says the same, top down, the forwards' count last
    text = lab.cli("doctor", "web1")
    assert text.returncode == 0 and text.stdout.splitlines()[-1] == "2 forwards: 2 fine, 0 not"


@BOTH
def test_ip_forward_off(lab: Lab, tmp_path: Path) -> None:
    start_web1(lab)
    before = lab.firewall()
    lab.exec(lab.host, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    assert lab.probe("tcp", 20443).startswith("ERROR")
    code, document = doctor(lab)
    [finding] = failing(document)
    assert code == 1 and finding["id"] == "sysctl.ip_forward"
    assert finding["evidence"] == "/proc/sys/net/ipv4/ip_forward: 0"
    assert finding["fix"].startswith("sysctl -w net.ipv4.ip_forward=1\n# and at boot: ./install.sh writes ")
    assert document["summary"] == {"forwards": 2, "fine": 0, "not": 2, "failing": ["sysctl.ip_forward"]}
    assert lab.firewall() == before  # doctor changed nothing
    apply_fix(lab, finding, node_uri(tmp_path))
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    assert doctor(lab)[0] == 0


@BOTH
@pytest.mark.parametrize("fault", ["missing", "expired"])
def test_no_current_lease(lab: Lab, tmp_path: Path, fault: str) -> None:
    start_web1(lab)
    if fault == "missing":  # the lease file without the guest's MAC
        lab.write_leases({"52:54:00:00:00:99": "192.168.122.99"})
    else:  # the guest's lease ran out an hour ago and was not renewed
        lab.write_leases({GUEST_MAC: GUEST_ADDRESS}, expiry=int(time.time()) - 3600)
    code, document = doctor(lab, "web1")
    assert code == 1
    found = failing(document)
    assert {f["id"] for f in found} == {f"lease.{fault}"} and len(found) == 2  # both forwards
    finding = found[0]
    assert finding["summary"].startswith(GUEST_MAC)
    assert f"the rules send to {GUEST_ADDRESS}" in finding["summary"]
    if fault == "expired":
        assert '"expiry-time": ' in finding["evidence"] and " s ago)" in finding["evidence"]
    # the fix: what the admin looks at, then the apply it names once the guest has a lease
    assert "virsh domifaddr web1 --source lease" in finding["fix"].splitlines()
    assert finding["fix"].splitlines()[-1] == "libvirt-portfwd apply web1"
    lab.write_leases({GUEST_MAC: GUEST_ADDRESS})  # the guest's DHCP client got its lease (again)
    proc = lab.cli("apply", "web1", "--connect", node_uri(tmp_path))
    assert proc.returncode == 0, proc.stderr
    code, document = doctor(lab, "web1")
    assert code == 0, failing(document)
    assert lab.probe("tcp", 20443) == "guest tcp 443"


@BOTH
def test_waiting_for_a_first_lease(lab: Lab) -> None:
    install_hooks(lab)
    lab.write_leases({})
    for proc in lab.start("web1", web1_xml()):
        assert proc.returncode == 0, proc.stderr
    code, document = doctor(lab)
    assert code == 1
    assert {f["id"] for f in failing(document)} == {"record.waiting", "lease.missing"}
    [domain] = document["domains"]
    assert domain["status"] == "waiting" and domain["forwards"][0]["guest"] is None
    lab.write_leases({GUEST_MAC: GUEST_ADDRESS})
    lab.wait_for("tcp", 20443, "guest tcp 443", within=5)
    assert doctor(lab)[0] == 0


@BOTH
def test_a_domain_with_nothing_recorded_and_bad_usage(lab: Lab) -> None:
    start_web1(lab)
    code, document = doctor(lab, "web2")
    [domain] = document["domains"]
    assert code == 1 and domain["name"] == "web2" and domain["uuid"] == ""
    [finding] = failing(document)
    assert finding["id"] == "record.missing"
    assert finding["fix"].splitlines()[-1] == "libvirt-portfwd apply web2"
    assert doctor(lab, WEB1)[0] == 0  # by UUID
    for argv in (["doctor", "web1", "web2"], ["doctor", "--frobnicate"], ["doctor", "we\nb1"]):
        proc = lab.cli(*argv)
        assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr


def start_daemon(lab: Lab, tmp_path: Path) -> subprocess.Popen[bytes]:
    """A process named libvirtd in the host (a copy of sleep: /proc names a process by its
    executable), after a second: the start time /proc gives is known to a second."""
    path = tmp_path / "bin" / "libvirtd"
    if not path.exists():
        path.parent.mkdir()
        shutil.copy("/bin/sleep", path)
    time.sleep(1.1)
    daemon = subprocess.Popen([*lab.enter(), str(path), "60"])
    time.sleep(1.1)
    return daemon


def hook_seen(lab: Lab) -> dict[str, str]:
    [finding] = [f for f in doctor(lab)[1]["host"] if f["id"] == "hook.seen"]
    return finding


def test_hook_seen_by_the_running_daemon(lab: Lab, tmp_path: Path) -> None:
    hooks = lab.root / "etc/libvirt/hooks"
    install_hooks(lab)
    daemon = start_daemon(lab, tmp_path)
    try:
        finding = hook_seen(lab)
        assert (finding["severity"], finding["summary"].split(":")[0]) == (
            "ok",
            f"libvirtd (pid {daemon.pid}) started after the hook was written",
        )
        assert f"/proc/{daemon.pid}/stat starttime " in finding["evidence"]

        install_hooks(lab)  # written again, after the daemon started, with no other hook before it
        code, document = doctor(lab)
        [finding] = [f for f in document["host"] if f["id"] == "hook.seen"]
        assert code == 1 and finding["severity"] == "fail"
        assert f"{hooks}/qemu.d/libvirt-portfwd written " in finding["evidence"]
        assert finding["fix"].splitlines()[0] == f"kill -HUP {daemon.pid}"  # no systemd under the root
        (lab.root / "run/systemd/system").mkdir(parents=True)
        assert hook_seen(lab)["fix"].splitlines()[0] == "systemctl restart libvirtd"
    finally:
        daemon.kill()
        daemon.wait()
    [finding] = [f for f in doctor(lab)[1]["host"] if f["id"] == "daemon.running"]
    assert finding["severity"] == "warn" and finding["fix"] == "systemctl start libvirtd"

    # another qemu hook was there when the daemon started: it reads qemu.d at every operation
    other = hooks / "qemu.d" / "00-other"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    daemon = start_daemon(lab, tmp_path)
    try:
        install_hooks(lab)
        finding = hook_seen(lab)
        assert finding["severity"] == "ok" and f"{other} was there before" in finding["evidence"]
        # an installation of ours older than the daemon (install.sh's releases, named by their time)
        other.unlink()
        prefix = tmp_path / "opt/libvirt-portfwd"
        (prefix / "releases/20200101T000000-4242").mkdir(parents=True)  # 2020-01-01 00:00:00 UTC
        (prefix / "current").symlink_to(REPO)
        install_hooks(lab, lib=prefix / "current")
        finding = hook_seen(lab)
        assert (
            finding["severity"] == "ok" and f"{prefix}/releases/20200101T000000-4242 (installed " in finding["evidence"]
        )
    finally:
        daemon.kill()
        daemon.wait()


def test_as_a_user_it_checks_less_and_says_so(lab: Lab) -> None:
    """As nobody: the state files are root's only, so the per-domain checks are skipped with a
    warning; what a user may read is still checked."""
    start_web1(lab)
    root = Path(tempfile.mkdtemp(prefix="pf-doctor-"))
    try:
        root.chmod(0o755)
        shutil.copytree(lab.root, root / "root", symlinks=True)  # its modes as the code made them: domains/ 0700
        proc = subprocess.run(
            [
                *lab.enter(),
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                PYTHON,
                "-m",
                "libvirt_portfwd.cli",
                "--root",
                str(root / "root"),
                "doctor",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
    finally:
        shutil.rmtree(root)
    assert proc.stderr == "", proc.stderr
    document = json.loads(proc.stdout)
    [access] = [f for f in document["host"] if f["id"] == "doctor.access"]
    assert access["severity"] == "warn"
    assert access["summary"].startswith("cannot read the recorded state and the pending intents as uid ")
    assert access["fix"] == "# as root:\nlibvirt-portfwd doctor"
    assert proc.returncode == 0 and document["domains"] == [] and failing(document) == []


# --- the firewall hops -------------------------------------------------------------------------------

FOREIGN = (  # an admin's /etc/nftables.conf: ssh in, nothing forwarded
    "table inet filter {\n"
    " chain input {\n type filter hook input priority 0; policy accept;\n tcp dport 22 accept\n }\n"
    " chain forward {\n type filter hook forward priority 0; policy drop;\n ct state established,related accept\n }\n"
    "}\n"
)


def fixed_by(lab: Lab, tmp_path: Path, id_: str) -> None:
    """doctor names the fault by ``id_`` (and nothing else fails), doctor changed nothing, and the
    fix applied as printed makes the forward answer and doctor fine again."""
    before = lab.firewall()
    code, document = doctor(lab)
    assert code == 1
    finding = next(f for f in failing(document) if f["id"] == id_)
    assert finding["fix"] and finding["evidence"], finding
    assert lab.firewall() == before  # doctor changed nothing
    apply_fix(lab, finding, node_uri(tmp_path))
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    code, document = doctor(lab)
    assert code == 0, failing(document)


@BOTH
def test_a_foreign_base_chain_with_policy_drop_on_forward(lab: Lab, tmp_path: Path) -> None:
    start_web1(lab)
    lab.exec(lab.host, "nft", "-f", "-", input=FOREIGN)
    assert lab.probe("tcp", 20443).startswith("ERROR")
    _, document = doctor(lab)
    [drop] = [f for f in failing(document) if f["id"] == "path.foreign_drop"]
    assert "inet filter forward" in drop["summary"] and "policy drop" in drop["evidence"]
    assert drop["fix"].startswith("nft insert rule inet filter forward ")
    fixed_by(lab, tmp_path, "path.foreign_drop")
    assert lab.probe("tcp", 22, address=GUEST_ADDRESS).startswith("ERROR")  # the admin's line opens only ours


@pytest.mark.parametrize("lab", ["iptables"], indirect=True)
def test_our_forward_jump_below_libvirts_reject(lab: Lab, tmp_path: Path) -> None:
    start_web1(lab)
    jump = ["FORWARD", "-m", "comment", "--comment", "libvirt-portfwd", "-j", "PORTFWD"]
    lab.exec(lab.host, "iptables", "-D", *jump)
    lab.exec(lab.host, "iptables", "-A", *jump)
    assert lab.probe("tcp", 20443).startswith("ERROR")
    fixed_by(lab, tmp_path, "rules.order")


@pytest.mark.parametrize("lab", ["iptables"], indirect=True)
def test_forward_policy_drop_with_our_accept_gone(lab: Lab, tmp_path: Path) -> None:
    start_web1(lab)
    lab.exec(lab.host, "iptables", "-D", "FORWARD", "-m", "comment", "--comment", "libvirt-portfwd", "-j", "PORTFWD")
    lab.exec(lab.host, "iptables", "-P", "FORWARD", "DROP")
    try:
        assert lab.probe("tcp", 20443).startswith("ERROR")
        _, document = doctor(lab)
        assert {"path.forward_policy", "rules.hooks"} <= {f["id"] for f in failing(document)}
        fixed_by(lab, tmp_path, "path.forward_policy")
    finally:
        lab.exec(lab.host, "iptables", "-P", "FORWARD", "ACCEPT")


@pytest.mark.parametrize("lab", ["nftables"], indirect=True)
def test_the_nft_gate_missing(lab: Lab, tmp_path: Path) -> None:
    start_web1(lab)
    listing = lab.exec(lab.host, "nft", "-a", "list", "chain", "ip", "libvirt_network", "guest_input")
    [handle] = [line.rsplit("# handle ", 1)[1] for line in listing.splitlines() if "libvirt-portfwd" in line]
    lab.exec(lab.host, "nft", "delete", "rule", "ip", "libvirt_network", "guest_input", "handle", handle.strip())
    assert lab.probe("tcp", 20443).startswith("ERROR")
    fixed_by(lab, tmp_path, "rules.gate")


@BOTH
def test_a_host_listener_on_the_forwarded_port(lab: Lab, tmp_path: Path) -> None:
    start_web1(lab)
    listener = subprocess.Popen(
        [*lab.enter(), PYTHON, "-c", LISTEN, HOST_ADDRESS, "20443"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "listening"
        code, document = doctor(lab)
        [found] = failing(document)
        assert code == 1 and found["id"] == "host.listener"
        assert f"would capture tcp {HOST_ADDRESS}:20443" in found["evidence"] and "python" in found["evidence"]
        assert "allow tcp/20443 in host_ports.allow" in found["fix"]
        # the fix the admin chooses here: allow the port (the line's last way out), then apply
        lab.write_config("lease_wait: 20\nhost_ports:\n  allow: [tcp/20443]\n")
        [apply] = [line.split("then: ", 1)[1] for line in found["fix"].splitlines() if "then: " in line]
        proc = lab.cli(*shlex.split(apply)[1:], "--connect", node_uri(tmp_path))
        assert proc.returncode == 0, proc.stderr
        assert lab.probe("tcp", 20443) == "guest tcp 443"
        assert doctor(lab)[0] == 0
    finally:
        listener.kill()
        listener.wait()


LISTEN = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("listening", flush=True)
time.sleep(120)
"""
