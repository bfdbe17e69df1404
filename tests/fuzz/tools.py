"""The real tools on the fuzz test's rulesets, and the real CLI process on some of its inputs,
in a throwaway network namespace with libvirt's own rules loaded (both of its firewalls, as
tests/netns/fakehost.py loads them).

Rulesets are checked in batches: one ``iptables-restore --test --noflush`` or ``nft -c -f`` for
many of them (each nft ruleset starts by deleting our table, so that each is checked as against a
host where we never ran); a refused batch is split until the refused rulesets are found.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import DATA
from tests.names import unique

BATCH_BYTES = 4 * 1024 * 1024
CHECK = {"iptables": ["iptables-restore", "--test", "--noflush"], "nftables": ["nft", "-c", "-f", "-"]}
FRESH_NFT = "table ip libvirt_portfwd\ndelete table ip libvirt_portfwd\n"


@contextmanager
def namespace() -> Iterator[str]:
    name = unique("pff")
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "virbr0", "type", "bridge"], check=True, timeout=30)
        in_ns(name, ["iptables-restore", "--noflush"], (DATA / "libvirt-iptables.rules").read_text(), check=True)
        in_ns(name, ["nft", "-f", "-"], (DATA / "libvirt-nftables.nft").read_text(), check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


def in_ns(ns: str, argv: list[str], stdin: str, *, check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, *argv], input=stdin, capture_output=True, text=True, timeout=300, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} in {ns}: {proc.stderr.strip()}")
    return proc


def refused(ns: str, backend: str, rulesets: list[str]) -> list[tuple[str, str]]:
    """The rulesets the real tool refuses, each with the tool's first line."""
    out: list[tuple[str, str]] = []
    batch: list[str] = []
    size = 0
    for text in rulesets:
        if batch and size + len(text) > BATCH_BYTES:
            out += _check(ns, backend, batch)
            batch, size = [], 0
        batch.append(text)
        size += len(text)
    if batch:
        out += _check(ns, backend, batch)
    return out


def _check(ns: str, backend: str, batch: list[str]) -> list[tuple[str, str]]:
    text = "".join(FRESH_NFT + t for t in batch) if backend == "nftables" else "".join(batch)
    proc = in_ns(ns, CHECK[backend], text)
    if proc.returncode == 0:
        return []
    if len(batch) == 1:
        return [(batch[0], (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[0])]
    half = len(batch) // 2
    return _check(ns, backend, batch[:half]) + _check(ns, backend, batch[half:])


def cli_plan(ns: str, root: Path, xml: bytes) -> subprocess.CompletedProcess[bytes]:
    """``plan -`` as the installed CLI runs it (Debian's python3 through hooks/boot.py), as root in
    the namespace: against its firewall, with the host's files under ``root``."""
    repo = Path(__file__).resolve().parents[2]
    env = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", f"LIBVIRT_PORTFWD_ROOT={root}"]
    argv = ["/usr/bin/python3", "-I", "-S", str(repo / "hooks/boot.py"), "cli", "--root", str(root), "plan", "-"]
    return subprocess.run(
        ["ip", "netns", "exec", ns, "env", "-i", *env, *argv], input=xml, capture_output=True, timeout=60, check=False
    )
