"""One list of backend names: the registry, the selector, the config, the CLI and messages agree."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from libvirt_portfwd import run
from libvirt_portfwd.backendnames import BACKENDS, CHOICES, FIREWALLS
from libvirt_portfwd.backends import available_backends, choose_backend, registry
from libvirt_portfwd.cli import _parser, main
from libvirt_portfwd.errors import PortfwdError
from libvirt_portfwd.policy import USAGE

from .helpers import config, network_xml


@pytest.fixture
def commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding both firewalls' commands (never run here: availability is all we ask)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in ("iptables-restore", "nft"):
        (bin_dir / command).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / command).chmod(0o755)
    monkeypatch.setitem(run.ENV, "PATH", str(bin_dir))
    return bin_dir


def network_dir(tmp_path: Path, libvirt_firewall: str | None) -> str:
    """/run/libvirt/network with one running NAT network on libvirt's ``libvirt_firewall``."""
    status = network_xml()
    if libvirt_firewall is not None:  # libvirt >= 10.4 records it; before, it only had iptables
        firewall = f"<firewall name='fwRemoval' backend='{libvirt_firewall}'/><network>"
        status = status.replace(b"<network>", firewall.encode(), 1)
    directory = tmp_path / "network"
    directory.mkdir()
    (directory / "default.xml").write_bytes(status)
    return str(directory)


def test_the_registry_is_built_against_the_names() -> None:
    backends = registry()
    assert tuple(backends) == BACKENDS
    assert [b.name for b in backends.values()] == list(BACKENDS)
    assert ("auto", *BACKENDS) == CHOICES


def test_available_backends_are_the_firewalls_not_the_do_nothing_one(commands: Path) -> None:
    assert tuple(b.name for b in available_backends()) == FIREWALLS == ("iptables", "nftables")


@pytest.mark.parametrize(("name", "libvirt_firewall"), [("iptables", None), ("nftables", "nftables"), ("none", None)])
def test_each_name_selects_its_backend(commands: Path, tmp_path: Path, name: str, libvirt_firewall: str | None) -> None:
    backend, reason = choose_backend(name, network_dir(tmp_path, libvirt_firewall))
    assert (backend.name, reason) == (name, "configured")


@pytest.mark.parametrize(("libvirt_firewall", "name"), [(None, "iptables"), ("nftables", "nftables")])
def test_auto_follows_libvirt(commands: Path, tmp_path: Path, libvirt_firewall: str | None, name: str) -> None:
    backend, reason = choose_backend("auto", network_dir(tmp_path, libvirt_firewall))
    assert (backend.name, reason) == (name, f"auto: libvirt runs network default with its {name} firewall")


def test_unknown_name_is_one_line_with_where_it_came_from_and_the_known_names() -> None:
    with pytest.raises(PortfwdError) as caught:
        choose_backend("nft", where="/run/libvirt-portfwd/domains/x.json")
    assert str(caught.value) == (
        "libvirt-portfwd: unknown backend (/run/libvirt-portfwd/domains/x.json): "
        "expected one of auto, iptables, nftables, none, got 'nft'"
    )


def test_auto_following_a_firewall_we_have_no_backend_for_says_so(commands: Path, tmp_path: Path) -> None:
    with pytest.raises(PortfwdError) as caught:
        choose_backend("auto", network_dir(tmp_path, "ebtables"))
    assert str(caught.value) == (
        "libvirt-portfwd: unknown backend: auto: libvirt runs network default with its ebtables firewall, "
        "which none of ours drives (iptables, nftables)"
    )


@pytest.mark.parametrize(("name", "libvirt_firewall"), [("iptables", "nftables"), ("nftables", None)])
def test_mismatch_advises_a_setting_the_config_accepts(
    commands: Path, tmp_path: Path, name: str, libvirt_firewall: str | None
) -> None:
    with pytest.raises(PortfwdError) as caught:
        choose_backend(name, network_dir(tmp_path, libvirt_firewall))
    advice = re.search(r"set backend: (\w+) \(or (\w+)\)", str(caught.value))
    assert advice is not None, str(caught.value)
    assert advice[1] == (libvirt_firewall or "iptables")
    for value in advice.groups():
        assert config({"backend": value}).backend == value


def plan_backend_option() -> argparse.Action:
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return next(a for a in commands.choices["plan"]._actions if a.dest == "backend")


def test_plan_backend_choices_are_the_names() -> None:
    assert tuple(plan_backend_option().choices or ()) == CHOICES
    for name in CHOICES:
        assert _parser().parse_args(["plan", "--backend", name, "web1.xml"]).backend == name


def test_plan_refuses_an_unknown_backend_as_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """One line, exit 2 (the boundary's usage code), not argparse's usage screen."""
    assert main(["plan", "--backend", "nft", "web1.xml"]) == USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'nft'" in err and err.startswith("libvirt-portfwd: usage: ")


def test_the_names_import_no_backend_and_no_typing() -> None:
    """The hook's stop path imports backends/__init__.py; config.py imports the names."""
    code = (
        "import sys, libvirt_portfwd.backendnames, libvirt_portfwd.backends; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(('libvirt_portfwd.', 'typing')))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30).stdout
    assert out.split() == [
        "libvirt_portfwd.backendnames",
        "libvirt_portfwd.backends",
        "libvirt_portfwd.deadline",
        "libvirt_portfwd.errors",
        "libvirt_portfwd.run",
    ]
