"""The lab's root file system builder (tests/lab/rootfs.py) without building one: the mirror
read from apt's sources, the package list, the cache key."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.installed import INSTALL_SH, INSTALL_SH_PACKAGES, REPO
from tests.lab import rootfs

ARCHIVE = "http://archive.example.org/debian"
SECURITY = "http://security.example.org/debian-security"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture(autouse=True)
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rootfs.MIRROR_ENV, raising=False)


def test_mirror_from_deb822_skips_backports_security_and_disabled(tmp_path: Path) -> None:
    write(
        tmp_path / "sources.list.d/backports.sources",
        "Types: deb\nURIs: http://backports.example.org/debian\nSuites: bookworm-backports\nComponents: main\n",
    )
    write(
        tmp_path / "sources.list.d/debian.sources",
        "Types: deb\nURIs: http://disabled.example.org/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb-src\nURIs: http://src.example.org/debian\nSuites: bookworm\n\n"
        f"Types: deb\n# a comment\nURIs: {ARCHIVE}\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        f"Types: deb\nURIs: {SECURITY}\nSuites: bookworm-security\nComponents: main\n",
    )
    assert rootfs.find_mirror(tmp_path) == ARCHIVE


def test_mirror_from_one_line_sources(tmp_path: Path) -> None:
    write(
        tmp_path / "sources.list",
        f"# deb http://commented.example.org/debian bookworm main\ndeb {SECURITY} bookworm-security main\n"
        f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {ARCHIVE} bookworm main\n",
    )
    assert rootfs.find_mirror(tmp_path) == ARCHIVE


def test_mirror_override_and_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(rootfs.RootfsError, match="no Debian archive"):
        rootfs.find_mirror(tmp_path)
    monkeypatch.setenv(rootfs.MIRROR_ENV, ARCHIVE)
    assert rootfs.find_mirror(tmp_path) == ARCHIVE


def test_packages_hold_what_install_sh_asks_for() -> None:
    """install.sh runs offline inside the root: every package it would apt-get is there."""
    text = INSTALL_SH.read_text()
    match = re.search(r"^PACKAGES=\(([^)]*)\)|^PACKAGES=\"([^\"]*)\"", text, re.M)
    assert match, "install.sh's PACKAGES line moved: update this test and tests/installed.py"
    wanted = set((match.group(1) or match.group(2)).split())
    assert wanted
    assert wanted <= set(INSTALL_SH_PACKAGES)
    for release in rootfs.RELEASES:
        assert set(INSTALL_SH_PACKAGES) <= set(rootfs.packages(release))
        assert {"libvirt-daemon-system", "qemu-system-x86", "linux-image-amd64", "busybox-static"} <= set(
            rootfs.packages(release)
        )


def test_packages_hold_the_neighbours_with_their_services_off() -> None:
    """Docker, firewalld and ufw are in every root (issue 15), their services disabled at build."""
    for release in rootfs.RELEASES:
        assert {"docker.io", "firewalld", "ufw", "nftables"} <= set(rootfs.packages(release))
    assert {"docker.service", "docker.socket", "containerd.service", "firewalld.service"} <= set(rootfs.DISABLED_UNITS)


def test_cache_key_follows_release_and_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = {release: rootfs.cache_key(release) for release in rootfs.RELEASES}
    assert len(set(keys.values())) == len(keys)
    assert rootfs.cache_key("trixie") == keys["trixie"]
    monkeypatch.setattr(rootfs, "GUEST_PACKAGES", (*rootfs.GUEST_PACKAGES, "socat"))
    assert rootfs.cache_key("trixie") != keys["trixie"]
    with pytest.raises(rootfs.RootfsError, match="unknown release"):
        rootfs.cache_key("sid")


def test_no_mirror_host_in_the_repository() -> None:
    """The mirror comes from the machine's apt sources; the repository names none."""
    result = subprocess.run(
        ["git", "-C", str(REPO), "grep", "-n", "-I", "-E", r"deb\.debian\.org|ftp\.[a-z.]*debian\.org|mirrors?\.[a-z]"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode == 128:
        pytest.skip("not a git checkout")
    hits = [line for line in result.stdout.splitlines() if not line.startswith("tests/unit/test_rootfs.py:")]
    assert hits == []
