"""Recorded state: what is live (or waiting for a lease) per domain, and the lock.

Teardown reads this, never today's config or the stop-time XML. One JSON file per domain
UUID under the run directory, written atomically; every change happens under one lock.
"""

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network

from .errors import PortfwdError
from .paths import Paths
from .plan import Claim, Forward, Plan

LIVE = "live"
WAITING = "waiting"


@dataclass
class Record:
    uuid: str
    name: str
    backend: str
    status: str  # LIVE or WAITING
    forwards: list[Forward]
    token: str = ""
    xml: str = ""  # WAITING only: the domain XML the waiter resolves again
    waiting_macs: list[str] = field(default_factory=list)

    @classmethod
    def from_plan(cls, plan: Plan, backend: str, status: str, **extra: str) -> "Record":
        return cls(plan.uuid, plan.name, backend, status, list(plan.forwards), **extra)  # type: ignore[arg-type]

    @property
    def plan(self) -> Plan:
        return Plan(self.name, self.uuid, tuple(self.forwards))

    @property
    def claims(self) -> list[Claim]:
        return [f.claim for f in self.forwards]


def load_record(paths: Paths, uuid: str) -> Record | None:
    try:
        with open(paths.record(uuid), "rb") as handle:
            return _decode(json.loads(handle.read()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PortfwdError("unreadable state", str(exc), where=paths.record(uuid)) from None


def load_records(paths: Paths) -> list[Record]:
    try:
        names = sorted(os.listdir(paths.state_dir))
    except FileNotFoundError:
        return []
    records = []
    for name in names:
        if name.endswith(".json"):
            record = load_record(paths, name[: -len(".json")])
            if record is not None:
                records.append(record)
    return records


def save_record(paths: Paths, record: Record) -> None:
    os.makedirs(paths.state_dir, mode=0o755, exist_ok=True)
    target = paths.record(record.uuid)
    tmp = f"{target}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(_encode(record), handle, indent=1, sort_keys=True)
    os.replace(tmp, target)


def delete_record(paths: Paths, uuid: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(paths.record(uuid))


@contextmanager
def locked(paths: Paths, timeout: float = 60.0) -> Iterator[None]:
    """Serialise every change (hooks, waiters, CLI) on one flock."""
    os.makedirs(paths.run_dir, mode=0o755, exist_ok=True)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PortfwdError("lock busy", f"waited {timeout:.0f} s", where=paths.lock) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)


def _encode(record: Record) -> dict:  # type: ignore[type-arg]
    data = asdict(record)
    data["forwards"] = [
        {
            **asdict(f),
            "address": str(f.address) if f.address else None,
            "guest": str(f.guest) if f.guest else None,
            "sources": [str(s) for s in f.sources],
        }
        for f in record.forwards
    ]
    return data


def _decode(data: dict) -> Record:  # type: ignore[type-arg]
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
    return Record(**{**data, "forwards": forwards})
