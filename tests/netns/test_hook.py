"""The hook run exactly as libvirt runs it, against a libvirt-like host with real packets."""

import subprocess
import time
import uuid as uuidlib

import pytest

from libvirt_portfwd.policy import BLOCKED
from tests.conftest import HOOK, REPO
from tests.netns.conftest import IN_PROCESS, SERVICE, Lab, port_forward, portfwd_metadata
from tests.netns.fakehost import GUEST_MAC, HOST_ADDRESS, HOST_ADDRESS_2, domain_xml

BOOT = REPO / "hooks" / "boot.py"

# every test runs against both of libvirt's firewall backends (its rules loaded as it writes them;
# backend: auto in our config follows libvirt's), and in both of the hook's modes: doing its work
# itself, and handing it to the running service (issue 14's warm path)
pytestmark = [
    pytest.mark.netns,
    pytest.mark.parametrize("lab", ["iptables", "nftables"], indirect=True),
    pytest.mark.parametrize("mode", [IN_PROCESS, SERVICE], indirect=True),
    pytest.mark.usefixtures("mode"),
]

WEB1 = "6f1d0c9a-6a3b-4c55-9a3e-2f0b6f6a1c01"
WEB2 = "7a2e1d0b-7b4c-4d66-8b4f-3a1c7b7b2d02"


def guide_xml(address: str = HOST_ADDRESS) -> str:
    """The guide's forward (20443 -> 443) plus 2080 -> 80 and a UDP service."""
    return domain_xml(
        "web1",
        WEB1,
        metadata=portfwd_metadata(
            port_forward("tcp", [(20443, 443), (2080, 80)], address=address),
            port_forward("udp", [(5353, None)], address=address),
        ),
    )


def test_start_makes_forwards_reachable_and_stop_restores_the_firewall(lab: Lab) -> None:
    before = lab.firewall()
    assert lab.probe("tcp", 20443).startswith("ERROR")
    xml = guide_xml()
    for proc in lab.start("web1", xml):
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == ""
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    assert lab.probe("tcp", 2080) == "guest tcp 80"
    assert lab.probe("udp", 5353) == "guest udp 5353 ping"
    # the guest's other ports stay closed, on the host address and directly
    assert lab.probe("tcp", 22).startswith("ERROR")
    assert lab.probe("tcp", 22, address="192.168.122.178").startswith("ERROR")
    assert lab.probe("tcp", 443, address="192.168.122.178").startswith("ERROR")
    # another host address is not forwarded
    assert lab.probe("tcp", 20443, address=HOST_ADDRESS_2).startswith("ERROR")
    assert set(lab.records()) == {WEB1}

    stop_xml = domain_xml("web1", WEB1, metadata="", running=False)  # stop-time XML lacks runtime bits
    for proc in lab.stop("web1", stop_xml):
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == ""
    assert lab.firewall() == before
    assert lab.records() == {}
    assert lab.probe("tcp", 20443).startswith("ERROR")


def test_reconnect_reapplies_without_duplicates(lab: Lab) -> None:
    xml = guide_xml()
    lab.start("web1", xml)
    rules = lab.our_rules()
    for _ in range(2):
        proc = lab.hook("web1", xml, "reconnect")
        assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert lab.our_rules() == rules
    assert lab.probe("tcp", 20443) == "guest tcp 443"


def test_reconnect_puts_back_rules_an_admin_flushed(lab: Lab) -> None:
    xml = guide_xml()
    lab.start("web1", xml)
    rules = lab.our_rules()
    lab.flush_ours()
    assert lab.probe("tcp", 20443).startswith("ERROR")
    assert lab.hook("web1", xml, "reconnect").returncode == 0
    assert sorted(lab.our_rules()) == sorted(rules)
    assert lab.probe("tcp", 20443) == "guest tcp 443"


def first_forward_rule(lab: Lab) -> str:
    """What libvirt's reject is checked after: FORWARD's first rule, or guest_input's."""
    if lab.kind == "iptables":
        return next(line for line in lab.firewall().splitlines() if line.startswith("-A FORWARD"))
    listing = lab.exec(lab.host, "nft", "list", "chain", "ip", "libvirt_network", "guest_input")
    return next(line.strip() for line in listing.splitlines() if "accept" in line or "reject" in line)


def test_our_accept_stays_above_libvirts_reject(lab: Lab) -> None:
    lab.start("web1", guide_xml())
    ours = first_forward_rule(lab)
    assert "libvirt-portfwd" in ours
    # libvirt putting its rules back on top (network restart, firewall reload) is repaired by the
    # next change of ours (here: reconnect, which libvirtd's restart runs)
    if lab.kind == "iptables":
        lab.exec(lab.host, "iptables", "-I", "FORWARD", "1", "-j", "LIBVIRT_FWI")
    else:
        lab.exec(lab.host, "nft", "insert", "rule", "ip", "libvirt_network", "guest_input", "oif", "virbr0", "reject")
    assert lab.probe("tcp", 20443).startswith("ERROR")
    assert lab.hook("web1", guide_xml(), "reconnect").returncode == 0
    assert first_forward_rule(lab) == ours
    assert lab.probe("tcp", 20443) == "guest tcp 443"


def test_no_lease_yet_returns_at_once_and_applies_when_the_lease_appears(lab: Lab) -> None:
    lab.write_leases({})
    xml = guide_xml()
    begin = time.monotonic()
    # pipes read to the end, as libvirt does: a waiter holding them would make this time out
    for op in ("prepare", "start", "started"):
        proc = subprocess.run(lab.hook_argv("web1", op), input=xml, capture_output=True, text=True, timeout=1.0)
        assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    print(f"start path without a lease returned in {time.monotonic() - begin:.3f} s")
    assert lab.records()[WEB1]["status"] == "waiting"
    assert lab.probe("tcp", 20443).startswith("ERROR")
    lab.write_leases({GUEST_MAC: "192.168.122.178"})
    took = lab.wait_for("tcp", 20443, "guest tcp 443", within=2.0)
    print(f"forward live {took:.3f} s after the lease was written")
    assert lab.records()[WEB1]["status"] == "live"


def test_waiter_does_nothing_when_the_vm_stopped_meanwhile(lab: Lab) -> None:
    lab.write_leases({})
    xml = guide_xml()
    before = lab.firewall()
    lab.start("web1", xml)
    lab.stop("web1", domain_xml("web1", WEB1, running=False))
    lab.write_leases({GUEST_MAC: "192.168.122.178"})
    time.sleep(1.0)
    assert lab.firewall() == before
    assert lab.records() == {}


def hooks_at_once(lab: Lab, domains: list[tuple[str, str]], operation: str, sub: str) -> None:
    """The hook for every (name, XML) at the same time, as libvirt does for VMs started together."""
    procs = [
        subprocess.Popen(
            lab.hook_argv(name, operation, sub),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, _ in domains
    ]
    for proc, (_, xml) in zip(procs, domains, strict=True):
        out, err = proc.communicate(xml, timeout=60)
        assert proc.returncode == 0 and out == "", err


def test_twenty_vms_started_concurrently(lab: Lab) -> None:
    before = lab.firewall()
    vms = []
    leases = {}
    for i in range(20):
        mac = GUEST_MAC if i == 0 else f"52:54:00:00:01:{i:02x}"
        address = "192.168.122.178" if i == 0 else f"192.168.122.{10 + i}"
        leases[mac] = address
        uuid = str(uuidlib.uuid4())
        xml = domain_xml(f"vm{i}", uuid, mac=mac, metadata=portfwd_metadata(port_forward("tcp", [(30000 + i, 80)])))
        vms.append((f"vm{i}", uuid, xml, address))
    lab.write_leases(leases)
    hooks_at_once(lab, [(name, xml) for name, _, xml, _ in vms], "started", "begin")
    records = lab.records()
    assert set(records) == {uuid for _, uuid, _, _ in vms}
    rules = lab.firewall()
    for i, (_, uuid, _, address) in enumerate(vms):
        assert records[uuid]["status"] == "live"
        if lab.kind == "iptables":
            dnat = (
                f'--dport {30000 + i} -m comment --comment "libvirt-portfwd:{uuid}" '
                f"-j DNAT --to-destination {address}:80"
            )
        else:
            dnat = f'{30000 + i} comment "libvirt-portfwd:{uuid}" : {address} . 80'
        assert dnat in rules
    if lab.kind == "iptables":
        assert len([line for line in rules.splitlines() if line.startswith("-A PORTFWD ")]) == 40  # nat + filter
        assert len([line for line in rules.splitlines() if line.startswith("-A PREROUTING") and "PORTFWD" in line]) == 1
    else:
        assert rules.count('libvirt-portfwd"') == 4  # the gate and our three hook rules, once each
    assert lab.probe("tcp", 30000) == "guest tcp 80"  # vm0 is the guest namespace: packets flow
    hooks_at_once(lab, [(name, xml) for name, _, xml, _ in vms], "stopped", "end")
    assert lab.firewall() == before
    assert lab.records() == {}


def test_second_vm_claiming_a_held_port_is_refused_and_the_first_keeps_working(lab: Lab) -> None:
    lab.start("web1", guide_xml())
    before = lab.firewall()
    xml2 = domain_xml(
        "web2", WEB2, mac="52:54:00:aa:bb:dd", metadata=portfwd_metadata(port_forward("tcp", [(20443, 22)]))
    )
    lab.write_leases({GUEST_MAC: "192.168.122.178", "52:54:00:aa:bb:dd": "192.168.122.179"})
    results = lab.start("web2", xml2)
    assert [p.returncode for p in results] == [0, 0, 0]  # default policy: the VM starts
    lines = [line for line in results[-1].stderr.splitlines() if line]
    assert lines == [
        f"libvirt-portfwd: web2: host port conflict (metadata portForward[0]): tcp *:20443 is already forwarded "
        f"to domain web1 ({WEB1}, tcp {HOST_ADDRESS}:20443)"
    ]
    assert lab.firewall() == before
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    lab.write_config("on_error: block\n")
    results = [lab.hook("web2", xml2, op) for op in ("prepare",)]
    assert results[0].returncode == BLOCKED
    assert "host port conflict" in results[0].stderr and "Traceback" not in results[0].stderr
    assert lab.firewall() == before


BAD_INPUTS = {
    "malformed-xml": (guide_xml()[:-40], "", "not well-formed XML"),  # cut short after our metadata
    "bad-metadata-port": (
        domain_xml("web1", WEB1, metadata=portfwd_metadata(port_forward("tcp", [(70000, 443)]))),
        "",
        "invalid forward (metadata portForward[0].range[0].start): expected a port 1-65535, got '70000'",
    ),
    "bad-metadata-proto": (
        domain_xml("web1", WEB1, metadata=portfwd_metadata(port_forward("icmp", [(80, None)]))),
        "",
        "expected tcp, udp or sctp, got 'icmp'",
    ),
    "bad-config-yaml": (guide_xml(), "domains: [unclosed\n", "not valid YAML"),
    "bad-config-value": (
        domain_xml("web1", WEB1),
        "domains:\n  web1:\n    - proto: tcp\n      ranges: [{start: http, to: 80}]\n",
        "domains.web1[0].ranges[0].start): expected a port 1-65535, got 'http'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_changes_nothing(lab: Lab, case: str) -> None:
    xml, config, expected = BAD_INPUTS[case]
    if config:
        lab.write_config(config)
    before = lab.firewall()
    for proc in lab.start("web1", xml):
        assert proc.returncode == 0 and proc.stdout == ""
        assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line]
    assert len(errors) == 1 and errors[0].startswith("libvirt-portfwd: web1: ") and expected in errors[0], errors
    assert lab.firewall() == before
    # with on_error: block (in a config that parses) the start fails, at prepare
    if not config:
        lab.write_config("on_error: block\n")
        proc = lab.hook("web1", xml, "prepare")
        assert proc.returncode == BLOCKED and expected in proc.stderr and "Traceback" not in proc.stderr
        assert lab.firewall() == before


def test_stop_operations_never_fail(lab: Lab) -> None:
    lab.write_config("on_error: block\n")
    for xml in ("garbage", domain_xml("web1", WEB1)):
        for op in ("stopped", "release", "reconnect"):
            proc = lab.hook("web1", xml, op, "end")
            assert proc.returncode == 0 and proc.stdout == ""


NOTHING_TO_DO = [
    # (operation, sub-operation, domain XML): operations the README names as doing nothing
    *[(op, "begin", "guide") for op in ("migrate", "restore", "attach", "start", "frobnicate")],
    # and the lifecycle operations of a VM that declares no forward and has no record
    *[
        (op, sub, "plain")
        for op, sub in (
            ("prepare", "begin"),
            ("started", "begin"),
            ("reconnect", "begin"),
            ("stopped", "end"),
            ("release", "end"),
        )
    ],
]


def hook_imports(lab: Lab, name: str, xml: str, operation: str, sub: str = "begin") -> tuple[str, set[str]]:
    """Run the hook's Python (what the shim runs) under ``-X importtime``: (its stderr, the
    modules it imported)."""
    argv = lab.hook_argv(name, operation, sub)
    hook_at = argv.index(str(HOOK))
    argv[hook_at : hook_at + 1] = ["/usr/bin/python3", "-X", "importtime", "-I", "-S", str(BOOT), "qemu", ""]
    proc = subprocess.run(argv, input=xml, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    return proc.stderr, {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "import time:" in line}


@pytest.mark.parametrize(("operation", "sub", "kind"), NOTHING_TO_DO)
def test_operations_with_nothing_to_do_import_nothing_heavy(lab: Lab, operation: str, sub: str, kind: str) -> None:
    xml = guide_xml() if kind == "guide" else domain_xml("plain", WEB2)
    assert lab.hook("plain", domain_xml("plain", WEB2), "started").returncode == 0  # the config is parsed once
    stderr, imported = hook_imports(lab, "plain", xml, operation, sub)
    assert "libvirt_portfwd.hook" in imported
    assert not {m for m in imported if m.split(".")[0] in ("lxml", "jinja2", "yaml")}
    assert not [line for line in stderr.splitlines() if "import time:" not in line]  # and says nothing


def test_a_restart_with_the_same_forwards_renders_without_jinja2(lab: Lab, mode: str) -> None:
    """The rendered rules are cached (render.py): the second start of a domain with the same
    forwards on the same firewall renders nothing, so jinja2 is not even imported, and the rules
    and traffic are those of the first start. With the service running the hook imports neither
    the renderer nor an XML parser: the service did the work (warm.py)."""
    for proc in lab.start("web1", guide_xml()):
        assert proc.returncode == 0, proc.stderr
    first = sorted(lab.our_rules())
    for proc in lab.stop("web1", guide_xml()):
        assert proc.returncode == 0, proc.stderr
    requests = lab.service_counts().get("requests", 0)
    _, imported = hook_imports(lab, "web1", guide_xml(), "started")
    if mode == SERVICE:
        assert "libvirt_portfwd.warm" in imported and lab.service_counts()["requests"] == requests + 1
        assert not {m for m in imported if m.split(".")[0] in ("lxml", "jinja2") or m == "libvirt_portfwd.render"}
    else:
        assert "libvirt_portfwd.render" in imported and "lxml.etree" in imported
    assert not {m for m in imported if m.split(".")[0] == "jinja2"}
    assert sorted(lab.our_rules()) == first
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    assert any((lab.root / "run/libvirt-portfwd/render").iterdir())
    # and stopping renders nothing: the removal was prerendered, the renderer is not even imported
    assert_prerendered(mode, *hook_imports(lab, "web1", guide_xml(), "stopped", "end"))


def assert_prerendered(mode: str, stderr: str, imported: set[str]) -> None:
    """A stop that applied its prerendered removal: no renderer, no XML parser (and no fallback);
    with the service running, not even the teardown: the service removed the rules."""
    assert ("libvirt_portfwd.warm" if mode == SERVICE else "libvirt_portfwd.teardown") in imported, stderr
    assert not {m for m in imported if m.split(".")[0] in ("jinja2", "lxml") or m == "libvirt_portfwd.render"}, stderr


def test_last_stop_deletes_the_gate_by_the_handles_it_has_then(lab: Lab, mode: str) -> None:
    """nftables: the last removal is prerendered with a stand-in for the gate's handles; the stop
    fills in the handles the gate has at that moment (here: moved since, so a new handle), and
    with libvirt's table gone it deletes our table alone. iptables: nothing to fill in."""

    def ours_left() -> list[str]:
        return [line for line in lab.firewall().splitlines() if "libvirt-portfwd" in line or "PORTFWD" in line]

    before = lab.firewall()
    for proc in lab.start("web1", guide_xml()):
        assert proc.returncode == 0, proc.stderr
    if lab.kind == "nftables":  # ours flushed and put back (as a repair does): the gate has a new handle
        first_handle = gate_handles(lab)
        lab.flush_ours()
        assert lab.hook("web1", guide_xml(), "reconnect").returncode == 0
        assert gate_handles(lab) not in ([], first_handle)
    assert ours_left()
    assert_prerendered(mode, *hook_imports(lab, "web1", guide_xml(), "stopped", "end"))
    assert lab.hook("web1", guide_xml(), "release", "end").returncode == 0
    assert lab.firewall() == before

    if lab.kind == "nftables":
        for proc in lab.start("web1", guide_xml()):
            assert proc.returncode == 0, proc.stderr
        lab.exec(lab.host, "nft", "delete", "table", "ip", "libvirt_network")
        for proc in lab.stop("web1", guide_xml()):
            assert proc.returncode == 0, proc.stderr
        assert ours_left() == []


def gate_handles(lab: Lab) -> list[str]:
    listing = lab.exec(lab.host, "nft", "-a", "list", "chain", "ip", "libvirt_network", "guest_input")
    return [line.rsplit("# handle ", 1)[1] for line in listing.splitlines() if "libvirt-portfwd" in line]
