"""Firewall backends: a small interface, a registry, and a selector that says what it chose and why."""

from __future__ import annotations

from ..backendnames import AUTO, BACKENDS, FIREWALLS, IPTABLES, NFTABLES, NONE, expected
from ..errors import PortfwdError
from ..run import on_path

TYPE_CHECKING = False  # typing is not imported at run time: the hook's stop path imports this
if TYPE_CHECKING:
    from .base import Backend


def registry() -> dict[str, Backend]:
    """Every backend by its name, in the order of backendnames.BACKENDS (tests check they agree)."""
    from .iptables import IptablesBackend
    from .nftables import NftablesBackend
    from .none import NoneBackend

    backends: list[Backend] = [IptablesBackend(), NftablesBackend(), NoneBackend()]
    return {b.name: b for b in backends}


def select_backend(name: str, network_dir: str | None = None, where: str = "") -> Backend:
    return choose_backend(name, network_dir, where)[0]


def choose_backend(name: str, network_dir: str | None = None, where: str = "") -> tuple[Backend, str]:
    """The backend for ``name`` (``auto`` follows the host) and why it was chosen; ``where``
    says where the name came from, for the message if it is not one of ours.

    libvirt rejects what enters its networks with its own firewall backend; only a rule in that
    same firewall can let a forward through. So ``auto`` takes the backend libvirt's running
    networks use (their live status says), else what the iptables command drives, and an
    explicit choice that cannot pass libvirt's reject is an error rather than a silent failure.
    """
    if name != AUTO and name not in BACKENDS:
        raise PortfwdError("unknown backend", f"{expected()}, got {name!r}", where=where)
    libvirt = _libvirt_firewalls(network_dir) if network_dir else {}
    if name == AUTO:
        if libvirt:
            chosen = sorted(set(libvirt.values()))[0] if len(set(libvirt.values())) == 1 else NFTABLES
            nets = ", ".join(sorted(libvirt))
            name, reason = chosen, f"auto: libvirt runs network {nets} with its {chosen} firewall"
        else:
            name, reason = _host_default()
    else:
        reason = "configured"
        for network, firewall in sorted(libvirt.items()):
            if firewall in FIREWALLS and name in FIREWALLS and firewall != name:
                raise PortfwdError(
                    "backend mismatch",
                    f"libvirt runs network {network} with its {firewall} firewall, whose reject only a rule in "
                    f"{firewall} can pass: set backend: {firewall} (or auto)",
                )
    backend = registry().get(name)
    if backend is None:  # auto followed a libvirt firewall that no backend of ours drives
        raise PortfwdError("unknown backend", f"{reason}, which none of ours drives ({', '.join(FIREWALLS)})")
    if not backend.available():
        raise PortfwdError("backend unavailable", f"{name}: its command is not installed ({reason})")
    return backend, reason


def available_backends() -> list[Backend]:
    """Every backend that can run here, the do-nothing one excluded."""
    return [b for name, b in registry().items() if name != NONE and b.available()]


def _libvirt_firewalls(network_dir: str) -> dict[str, str]:
    """Running network -> the firewall backend libvirt runs it with, from its live status XML.

    libvirt before 10.4 had only iptables and records no backend; later ones record it.
    """
    from ..network import load_networks

    return {n.name: n.firewall or IPTABLES for n in load_networks(network_dir).values() if n.forward_mode}


def _host_default() -> tuple[str, str]:
    """No libvirt network says: what the iptables command drives (legacy xtables or nf_tables)."""
    from ..run import run_all

    if not on_path("iptables"):
        return NFTABLES, "auto: no iptables command, nft drives the firewall"
    [(code, out, _)] = run_all([["iptables", "-V"]])
    if code == 0 and "legacy" in out:
        return IPTABLES, "auto: iptables drives the legacy xtables firewall"
    if on_path("nft"):
        return NFTABLES, "auto: iptables drives nf_tables, so nft rules are native here"
    return IPTABLES, "auto: iptables drives nf_tables and nft is not installed"
