"""The backend interface (for type checking; backends implement it structurally)."""

from typing import Protocol

from ..findings import Finding
from ..model import Plan


class Backend(Protocol):
    name: str

    def available(self) -> bool:
        """Whether this host can run the backend's commands."""

    def change(self, plan: Plan, others: int, previous: str = "") -> str:
        """Render the one transaction that makes the domain's rules exactly ``plan``.

        ``previous`` is the removal prerendered when the domain's current rules went live ("" if
        none); ``others`` counts the other domains with live rules. Reads only what the change
        depends on; changes nothing.
        """

    def removal(self, plan: Plan) -> dict[str, str]:
        """Prerender the removal of ``plan``'s rules as just applied: ``other`` (other domains
        stay live) and, where it can be known now, ``last``. Teardown applies one without reading
        the firewall; if the firewall was changed meanwhile, that is refused whole, and teardown
        rebuilds from the records instead."""

    def bind(self, removal: str, last: bool = False) -> str:
        """A prerendered removal with what only the firewall at removal time knows added (the
        ``last`` one under nftables: the deletion of our gate, by the handles it has now).
        Renders nothing: stop path."""

    def rebuild(self, plans: list[Plan]) -> str:
        """Render the transaction that makes all of our rules exactly ``plans`` (sync, repair)."""

    def apply(self, ruleset: str) -> None:
        """Apply a rendered transaction atomically, or raise FirewallError and change nothing."""

    def live(self) -> set[str]:
        """UUIDs of the domains whose rules packets reach now."""

    def owners(self) -> set[str]:
        """UUIDs of the domains that have any rule of ours now, reachable or not."""

    def findings(self, live: dict[str, str]) -> list[Finding]:
        """What the firewall read back says of our rules as a whole, and of each domain recorded
        live (uuid -> name): present, in order, reached; counters where they are kept."""
