"""The do-nothing backend: renders nothing, applies nothing (dry runs, hosts without a firewall)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..findings import Finding
    from ..model import Plan


class NoneBackend:
    name = "none"

    def available(self) -> bool:
        return True

    def change(self, plan: Plan, others: int, previous: str = "") -> str:
        return ""

    def removal(self, plan: Plan) -> dict[str, str]:
        return {"other": "", "last": ""}

    def bind(self, removal: str, last: bool = False) -> str:
        return removal

    def rebuild(self, plans: list[Plan]) -> str:
        return ""

    def apply(self, ruleset: str) -> None:
        return None

    def live(self) -> set[str]:
        return set()

    def owners(self) -> set[str]:
        return set()

    def findings(self, live: dict[str, str]) -> list[Finding]:
        """No rules to read back: each live domain is said to have none (backend: none)."""
        from ..findings import INFO, Finding

        return [Finding("rules.domain", INFO, name, "backend none: no rule is written") for name in live.values()]
