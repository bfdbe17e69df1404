"""Firewall backends: a small interface, a registry, and a selector that says what it tried."""

from typing import Protocol

from ..errors import PortfwdError
from ..model import Plan

NAMES = ("iptables", "none")
AUTO_ORDER = ("iptables",)


class Backend(Protocol):
    name: str

    def available(self) -> bool:
        """Whether this host can run the backend's commands."""

    def change(self, uuid: str, plan: Plan | None, others: int) -> str:
        """Render the one transaction that makes ``uuid``'s rules match ``plan`` (None: remove).

        ``others`` counts the other domains with live rules, so the last removal can take our
        base chains away. Reads only what the change depends on; changes nothing.
        """

    def removal(self, uuid: str) -> dict[str, str]:
        """Prerender the removal of ``uuid``'s rules as just applied: ``other`` (other domains
        still live) and ``last``; teardown applies one without reading the firewall first."""

    def rebuild(self, plans: list[Plan]) -> str:
        """Render the transaction that makes all of our rules exactly ``plans`` (sync)."""

    def apply(self, ruleset: str) -> None:
        """Apply a rendered transaction atomically, or raise FirewallError and change nothing."""

    def live_chains(self) -> set[str]:
        """UUID-derived names of the domains whose rules packets reach now."""


def _registry() -> dict[str, Backend]:
    from .iptables import IptablesBackend
    from .none import NoneBackend

    return {"iptables": IptablesBackend(), "none": NoneBackend()}


def select_backend(name: str) -> Backend:
    """``auto`` takes the first available backend; an explicit name must be available."""
    registry = _registry()
    if name != "auto":
        backend = registry.get(name)
        if backend is None:
            raise PortfwdError("unknown backend", f"{name!r} (known: {', '.join(registry)})")
        if not backend.available():
            raise PortfwdError("backend unavailable", f"{name}: its commands are not installed")
        return backend
    for candidate in AUTO_ORDER:
        if registry[candidate].available():
            return registry[candidate]
    raise PortfwdError("no firewall backend", f"tried {', '.join(AUTO_ORDER)}: none is installed (install iptables)")


def available_backends() -> list[Backend]:
    """Every backend that can run here, the do-nothing one excluded."""
    return [b for name, b in _registry().items() if name != "none" and b.available()]
