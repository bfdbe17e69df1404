"""Recorded state: what is live (or waiting for a lease) per domain, the index, and the lock.

Teardown reads this, never today's config or the stop-time XML. One JSON file per domain
UUID under the run directory, plus an index (name, status, backend and claimed host ports of
every domain) so that a change reads one file, not one per domain. Written atomically, and
only under the lock. Stdlib only: the hook's stop path imports this.
"""

from __future__ import annotations

import fcntl
import json
import os
import time

from .errors import PortfwdError
from .paths import Paths

TYPE_CHECKING = False  # typing is not imported at run time: the stop path imports this module
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any

    Data = dict[str, Any]  # a record, or an index entry, as JSON data

LIVE = "live"
WAITING = "waiting"
INDEX_KEYS = ("name", "status", "backend", "claims")


def read(paths: Paths, uuid: str) -> Data | None:
    """The domain's record, or None."""
    try:
        with open(paths.record(uuid), "rb") as handle:
            data = json.loads(handle.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PortfwdError("unreadable state", str(exc), where=paths.record(uuid)) from None
    if not isinstance(data, dict):
        raise PortfwdError("unreadable state", "not a JSON object", where=paths.record(uuid))
    return data


def uuids(paths: Paths) -> list[str]:
    try:
        names = os.listdir(paths.state_dir)
    except FileNotFoundError:
        return []
    return sorted(name[: -len(".json")] for name in names if name.endswith(".json"))


def write(paths: Paths, uuid: str, data: Data, index: dict[str, Data] | None = None) -> None:
    """Write the record, then its index entry (under the lock; ``index``: as just read)."""
    _write_json(paths.record(uuid), data)
    index = read_index(paths) if index is None else index
    index[uuid] = {key: data[key] for key in INDEX_KEYS}
    _write_json(paths.index, index)


def replace_all(paths: Paths, records: dict[str, Data]) -> None:
    """Exactly these records and no others (sync), the index written once."""
    for uuid in set(uuids(paths)) - set(records):
        os.unlink(paths.record(uuid))
    for uuid, data in records.items():
        _write_json(paths.record(uuid), data)
    _write_json(paths.index, {uuid: {key: data[key] for key in INDEX_KEYS} for uuid, data in records.items()})


def delete(paths: Paths, uuid: str, index: dict[str, Data] | None = None) -> None:
    if os.path.exists(paths.record(uuid)):
        os.unlink(paths.record(uuid))
    index = read_index(paths) if index is None else index
    if index.pop(uuid, None) is not None:
        _write_json(paths.index, index)


def read_index(paths: Paths) -> dict[str, Data]:
    """uuid -> {name, status, backend, claims}; rebuilt from the records if missing or stale."""
    try:
        with open(paths.index, "rb") as handle:
            index = json.loads(handle.read())
        if isinstance(index, dict):
            return index
    except (OSError, ValueError):
        pass
    index = {}
    for uuid in uuids(paths):
        data = read(paths, uuid)
        if data is not None:
            index[uuid] = {key: data.get(key) for key in INDEX_KEYS}
    return index


class locked:
    """Serialise every change (hooks, waiters, CLI) on one flock."""

    def __init__(self, paths: Paths, timeout: float = 60.0) -> None:
        self.paths, self.timeout, self.fd = paths, timeout, -1

    def __enter__(self) -> None:
        os.makedirs(self.paths.run_dir, mode=0o755, exist_ok=True)
        self.fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise PortfwdError("lock busy", f"waited {self.timeout:.0f} s", where=self.paths.lock) from None
                time.sleep(0.005)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        os.close(self.fd)


def _write_json(path: str, data: object) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)
