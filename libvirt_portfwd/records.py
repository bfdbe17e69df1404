"""Record: one domain's recorded state as model objects, on top of state's JSON files."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address, IPv4Network

from . import state
from .model import Claim, Forward, Plan
from .paths import Paths

TIMED_OUT = "timed-out"  # status shows a waiting record past its lease_wait so


@dataclass
class Record:
    uuid: str
    name: str
    backend: str
    status: str  # state.LIVE or state.WAITING
    forwards: list[Forward]
    token: str = ""  # WAITING: which waiter may apply
    xml: str = ""  # the declaration (domain XML) it was made from: what a wait or a re-resolve plans again
    waiting_macs: list[str] = field(default_factory=list)
    teardown: dict[str, str] = field(default_factory=dict)  # LIVE: prerendered removals (see teardown)
    timed_out_at: float = 0.0  # WAITING: when its waiter's lease_wait ran out (0: not yet); the service goes on

    @property
    def shown_status(self) -> str:
        """What status prints: live, waiting, or timed-out (a wait past lease_wait, still followed)."""
        return TIMED_OUT if self.status == state.WAITING and self.timed_out_at else self.status

    @classmethod
    def from_plan(cls, plan: Plan, backend: str, status: str) -> Record:
        return cls(plan.uuid, plan.name, backend, status, list(plan.forwards))

    @property
    def plan(self) -> Plan:
        return Plan(self.name, self.uuid, tuple(self.forwards))

    @property
    def claims(self) -> list[Claim]:
        return [f.claim for f in self.forwards]


def load_record(paths: Paths, uuid: str) -> Record | None:
    data = state.read(paths, uuid)
    return None if data is None else decode(data)


def load_records(paths: Paths) -> list[Record]:
    return [r for r in (load_record(paths, uuid) for uuid in state.uuids(paths)) if r is not None]


def save_record(paths: Paths, record: Record, index: dict[str, state.Data] | None = None) -> None:
    state.write(paths, record.uuid, encode(record), index)


def encode(record: Record) -> state.Data:
    """JSON data (field by field: dataclasses.asdict is slow where sync encodes 1,000 records)."""
    return {
        "uuid": record.uuid,
        "name": record.name,
        "backend": record.backend,
        "status": record.status,
        "forwards": [encode_forward(f) for f in record.forwards],
        "token": record.token,
        "xml": record.xml,
        "waiting_macs": list(record.waiting_macs),
        "teardown": dict(record.teardown),
        "timed_out_at": record.timed_out_at,
        "claims": [[c.proto, str(c.address) if c.address else None, c.start, c.end] for c in record.claims],
    }


def encode_forward(f: Forward) -> dict[str, object]:
    """One forward as JSON data (records; doctor --json)."""
    return {
        "proto": f.proto,
        "address": str(f.address) if f.address else None,
        "dev": f.dev,
        "sources": [str(s) for s in f.sources],
        "start": f.start,
        "end": f.end,
        "guest_port": f.guest_port,
        "mac": f.mac,
        "bridge": f.bridge,
        "guest": str(f.guest) if f.guest else None,
        "where": f.where,
    }


def decode(data: state.Data) -> Record:
    forwards = [
        Forward(
            **{
                **f,
                "address": IPv4Address(f["address"]) if f["address"] else None,
                "guest": IPv4Address(f["guest"]) if f["guest"] else None,
                "sources": tuple(IPv4Network(s) for s in f["sources"]),
            }
        )
        for f in data["forwards"]
    ]
    known = {f.name for f in fields(Record)}
    return Record(**{**{k: v for k, v in data.items() if k in known}, "forwards": forwards})
