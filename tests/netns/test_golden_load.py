"""Every golden ruleset is accepted by the real iptables-restore / nft (loaded, then checked).

The golden tests prove what we render; this proves the kernel and the tools take it, SCTP
included (this kernel has no SCTP sockets, so SCTP forwards are loaded here, not sent traffic).
"""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DATA, need_root
from tests.names import unique

pytestmark = pytest.mark.netns

CASES = Path(__file__).resolve().parents[1] / "cases"
GOLDEN = sorted(CASES.glob("*/iptables.rules")) + sorted(CASES.glob("*/nftables.rules"))


@pytest.fixture
def ns() -> Iterator[str]:
    need_root()
    name = unique("pfl")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def load(ns: str, argv: list[str], text: str) -> None:
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv], input=text, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_golden_ruleset_loads(ns: str, golden: Path) -> None:
    assert GOLDEN, "no golden rulesets found"
    if golden.name == "iptables.rules":
        load(ns, ["iptables-restore", "--noflush"], (DATA / "libvirt-iptables.rules").read_text())
        load(ns, ["iptables-restore", "--noflush"], golden.read_text())
        listing = subprocess.run(["ip", "netns", "exec", ns, "iptables-save"], capture_output=True, text=True).stdout
        assert "-j PORTFWD" in listing
    else:
        subprocess.run(["ip", "-n", ns, "link", "add", "virbr0", "type", "bridge"], check=True)  # libvirt's match it
        load(ns, ["nft", "-f", "-"], (DATA / "libvirt-nftables.nft").read_text())
        load(ns, ["nft", "-f", "-"], golden.read_text())
        listing = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "list", "ruleset"], capture_output=True, text=True
        ).stdout
        assert "table ip libvirt_portfwd" in listing and "libvirt-portfwd" in listing
