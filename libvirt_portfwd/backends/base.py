"""The backend interface (for type checking; backends implement it structurally)."""

from typing import Protocol

from ..model import Plan


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
