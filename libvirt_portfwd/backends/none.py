"""The do-nothing backend: renders nothing, applies nothing (dry runs, hosts without a firewall)."""

from ..plan import Plan


class NoneBackend:
    name = "none"

    def available(self) -> bool:
        return True

    def change(self, uuid: str, plan: Plan | None, others: int) -> str:
        return ""

    def rebuild(self, plans: list[Plan]) -> str:
        return ""

    def apply(self, ruleset: str) -> None:
        return None

    def live_chains(self) -> set[str]:
        return set()
