"""Firewall backends: a small interface, a registry, and a selector that says what it tried."""

from typing import Protocol

from ..errors import PortfwdError
from ..plan import Plan


class Backend(Protocol):
    name: str

    def available(self) -> bool:
        """Whether this host can run the backend's commands."""

    def change(self, uuid: str, plan: Plan | None, others: int) -> str:
        """Render the one transaction that makes ``uuid``'s rules match ``plan`` (None: remove).

        ``others`` counts the other domains with live rules, so the last removal can take our
        base chains away. Reads only what the change depends on; changes nothing.
        """

    def rebuild(self, plans: list[Plan]) -> str:
        """Render the transaction that makes all of our rules exactly ``plans`` (sync)."""

    def apply(self, ruleset: str) -> None:
        """Apply a rendered transaction atomically, or raise FirewallError and change nothing."""

    def live_chains(self) -> set[str]:
        """UUID-derived names of the domains whose rules are in the firewall now."""


def backend_names() -> tuple[str, ...]:
    return ("iptables", "none")


def select_backend(name: str) -> Backend:
    """``auto`` takes the first available backend; an explicit name must be available."""
    from .iptables import IptablesBackend
    from .none import NoneBackend

    registry: dict[str, Backend] = {"iptables": IptablesBackend(), "none": NoneBackend()}
    if name != "auto":
        backend = registry.get(name)
        if backend is None:
            raise PortfwdError("unknown backend", f"{name!r} (known: {', '.join(registry)})")
        if not backend.available():
            raise PortfwdError("backend unavailable", f"{name}: iptables-restore not found")
        return backend
    tried = []
    for candidate in ("iptables",):
        if registry[candidate].available():
            return registry[candidate]
        tried.append(candidate)
    raise PortfwdError("no firewall backend", f"tried {', '.join(tried)}: none is installed (install iptables)")
