"""What ``plan`` and ``status`` print: one collected result, two renderings of it (the text a
person reads, and ``--json``). The CLI collects (cli.py); nothing here reads the system.

The JSON document is one object, ``json.dumps(sort_keys=True, indent=2)`` and a newline. Its
keys are documented (README, "JSON output") and fixed by golden tests; ``version`` changes
when a key is renamed, removed or changes meaning (adding a key keeps the version):

    plan:   version, name, uuid, backend, forwards, waiting_macs, ruleset
    status: version, backend, domains [name, uuid, state, live, forwards], pending
            [uuid, name, op, age_seconds]
    backend: name, reason, error (status: name and reason null when none is usable)
    forward: claim, proto, address, start, end, dev, sources, guest, guest_port, mac, bridge
             (status: and live)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from . import state
from .model import Forward, Plan

VERSION = 1

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Document = dict[str, Any]


@dataclass(frozen=True)
class BackendChoice:
    """The backend chosen and why, or why none is usable (status only: plan fails instead)."""

    name: str | None
    reason: str | None
    error: str | None = None

    def data(self) -> Document:
        return {"name": self.name, "reason": self.reason, "error": self.error}


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    backend: BackendChoice
    ruleset: str | None  # None: a start would apply nothing now (waiting for a lease, or no forwards)

    def text(self) -> str:
        from .actions import describe  # loaded already by the plan that made this result

        plan = self.plan
        lines = [f"# domain {plan.name} ({plan.uuid}), backend {self.backend.name} ({self.backend.reason})\n"]
        lines.append(f"# {describe(plan)}\n")
        if plan.waiting_macs:
            lines.append(f"# no address yet for {', '.join(plan.waiting_macs)}: start would wait for its lease\n")
        elif self.ruleset:
            lines.append(self.ruleset)
        return "".join(lines)

    def data(self) -> Document:
        plan = self.plan
        return {
            "version": VERSION,
            "name": plan.name,
            "uuid": plan.uuid,
            "backend": self.backend.data(),
            "forwards": [forward_data(f) for f in plan.forwards],
            "waiting_macs": list(plan.waiting_macs),
            "ruleset": self.ruleset,
        }


@dataclass(frozen=True)
class DomainStatus:
    name: str
    uuid: str
    state: str  # state.LIVE or state.WAITING
    forwards: tuple[Forward, ...]
    live: bool | None  # LIVE: whether packets reach its rules now; None: not live (waiting)


@dataclass(frozen=True)
class Pending:
    """An intent not carried out yet: what a hook asked for and could not finish."""

    uuid: str
    name: str | None
    op: str  # state.APPLY or state.REMOVE
    age_seconds: int


@dataclass(frozen=True)
class StatusResult:
    backend: BackendChoice
    domains: tuple[DomainStatus, ...]
    pending: tuple[Pending, ...]

    def text(self) -> str:
        backend = self.backend
        if backend.error is None:
            lines = [f"backend: {backend.name} ({backend.reason})"]
        else:
            lines = [f"backend: none usable: {backend.error}"]
        lines.append(f"{'DOMAIN':20} {'UUID':36} {'STATE':8} {'FORWARD':28} {'GUEST':22} LIVE")
        for domain in self.domains:
            live = "-" if domain.live is None else "yes" if domain.live else "NO"
            for forward in domain.forwards or [None]:
                claim = str(forward.claim) if forward else "-"
                target = f"{forward.guest or '?'}:{forward.guest_port}" if forward else "-"
                lines.append(f"{domain.name:20} {domain.uuid:36} {domain.state:8} {claim:28} {target:22} {live}")
        for intent in self.pending:
            what = "removal" if intent.op == state.REMOVE else "apply"
            asked = f"{what} asked {intent.age_seconds} s ago (see the log)"
            lines.append(f"{intent.name or '?':20} {intent.uuid:36} pending  {asked}")
        if not self.domains:
            lines.append("(no forwards recorded)")
        return "".join(f"{line}\n" for line in lines)

    def data(self) -> Document:
        return {
            "version": VERSION,
            "backend": self.backend.data(),
            "domains": [
                {
                    "name": d.name,
                    "uuid": d.uuid,
                    "state": d.state,
                    "live": d.live,
                    "forwards": [{**forward_data(f), "live": d.live} for f in d.forwards],
                }
                for d in self.domains
            ],
            "pending": [
                {"uuid": p.uuid, "name": p.name, "op": p.op, "age_seconds": p.age_seconds} for p in self.pending
            ],
        }


def forward_data(forward: Forward) -> Document:
    """A forward as documented output (not the state file's encoding, which may change freely)."""
    return {
        "claim": str(forward.claim),
        "proto": forward.proto,
        "address": str(forward.address) if forward.address else None,
        "start": forward.start,
        "end": forward.end,
        "dev": forward.dev,
        "sources": [str(s) for s in forward.sources],
        "guest": str(forward.guest) if forward.guest else None,
        "guest_port": forward.guest_port,
        "mac": forward.mac,
        "bridge": forward.bridge,
    }


def render(result: PlanResult | StatusResult, as_json: bool) -> str:
    """The text, or the one JSON document (sorted keys, a trailing newline)."""
    return json.dumps(result.data(), sort_keys=True, indent=2) + "\n" if as_json else result.text()
