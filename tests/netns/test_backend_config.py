"""`backend:` in the config, on both of libvirt's firewalls: the hook run as libvirt runs it.

The backend libvirt's firewall needs, named (`iptables` on an iptables host, `nftables` on an
nftables one), works as `auto` does: the start path makes the forward reachable with real TCP
traffic and the stop path restores the firewall. `none` records the domain and changes no rule.
The other firewall's backend, named, is refused with advice that works when followed.
"""

import subprocess

import pytest

from tests.netns.conftest import Lab, port_forward, portfwd_metadata
from tests.netns.fakehost import HOST_ADDRESS, domain_xml

pytestmark = [pytest.mark.netns, pytest.mark.parametrize("lab", ["iptables", "nftables"], indirect=True)]

WEB1 = "3c6a2f1e-5d4b-4a79-8e21-9b0c7d6e5f02"
OTHER = {"iptables": "nftables", "nftables": "iptables"}


def web1_xml(running: bool = True) -> str:
    metadata = portfwd_metadata(port_forward("tcp", [(20443, 443)], address=HOST_ADDRESS)) if running else ""
    return domain_xml("web1", WEB1, metadata=metadata, running=running)  # stop-time XML lacks runtime bits


def configure(lab: Lab, backend: str) -> None:
    lab.write_config(f"lease_wait: 20\nbackend: {backend}\n")


def logged(procs: list[subprocess.CompletedProcess[str]]) -> str:
    """What libvirt needs from every hook call (exit 0, nothing on stdout); what they logged."""
    for proc in procs:
        assert (proc.returncode, proc.stdout) == (0, ""), proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
    return "".join(proc.stderr for proc in procs)


def whole_firewall(lab: Lab) -> tuple[str, str]:
    """Both tools' listings of the host (`none` must change neither, whichever libvirt runs)."""
    host_kind = lab.kind
    try:
        lab.kind = "iptables"  # Lab.firewall() lists the tool of the kind it imitates
        iptables = lab.firewall()
        lab.kind = "nftables"
        return iptables, lab.firewall()
    finally:
        lab.kind = host_kind


LIVE = "web1: forward tcp 203.0.113.10:20443 -> 192.168.122.178:443 live"
REMOVED = "web1: forwards removed (1 recorded)"


@pytest.mark.parametrize("configured", ["named", "auto"])
def test_start_makes_the_forward_reachable_and_stop_restores_the_firewall(lab: Lab, configured: str) -> None:
    backend = lab.kind if configured == "named" else "auto"
    configure(lab, backend)
    before = lab.firewall()
    assert lab.probe("tcp", 20443).startswith("ERROR")
    assert f"{LIVE} ({lab.kind})" in logged(lab.start("web1", web1_xml()))
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    assert lab.probe("tcp", 22).startswith("ERROR")  # and nothing but the forward
    record = lab.records()[WEB1]
    assert (record["status"], record["backend"]) == ("live", lab.kind)
    assert REMOVED in logged(lab.stop("web1", web1_xml(running=False)))
    assert lab.firewall() == before
    assert lab.records() == {}
    assert lab.probe("tcp", 20443).startswith("ERROR")


def test_backend_none_records_the_domain_and_changes_no_rule(lab: Lab) -> None:
    configure(lab, "none")
    before = whole_firewall(lab)
    assert f"{LIVE} (none)" in logged(lab.start("web1", web1_xml()))
    record = lab.records()[WEB1]
    assert (record["status"], record["backend"]) == ("live", "none")
    assert [f"{f['guest']}:{f['guest_port']}" for f in record["forwards"]] == ["192.168.122.178:443"]
    assert whole_firewall(lab) == before
    assert lab.probe("tcp", 20443).startswith("ERROR")
    assert f"{LIVE} (none)" in logged([lab.hook("web1", web1_xml(), "reconnect")])
    assert whole_firewall(lab) == before
    assert REMOVED in logged(lab.stop("web1", web1_xml(running=False)))
    assert lab.records() == {}
    assert whole_firewall(lab) == before


def test_the_other_firewalls_backend_is_refused_with_advice_that_works(lab: Lab) -> None:
    configure(lab, OTHER[lab.kind])
    before = lab.firewall()
    errors = logged(lab.start("web1", web1_xml())).splitlines()  # on_error: allow, the VM starts
    assert len(errors) == 1, errors
    assert errors[0].startswith("libvirt-portfwd: web1: backend mismatch: ")
    assert errors[0].endswith(f"set backend: {lab.kind} (or auto)")
    assert lab.firewall() == before
    assert lab.probe("tcp", 20443).startswith("ERROR")

    configure(lab, lab.kind)  # the advice, followed
    assert f"{LIVE} ({lab.kind})" in logged([lab.hook("web1", web1_xml(), "reconnect")])
    assert lab.probe("tcp", 20443) == "guest tcp 443"
    assert REMOVED in logged(lab.stop("web1", web1_xml(running=False)))
    assert lab.firewall() == before
