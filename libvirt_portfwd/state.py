"""Recorded state, its one owner: records, the index, intents, and the lock.

- A record per domain UUID (``domains/<uuid>.json``): what is live (or waiting for a lease)
  and its prerendered removal. Teardown reads this, never today's config or the stop-time XML.
- The index (``index.json``): every record's name, status, backend and claimed host ports, so
  that a change reads one file, not one per domain. Each entry carries the stamp (inode, size,
  mtime) of the record it was made from; an index that does not match the records exactly (a
  crash between the two writes) is rebuilt from them, so no claim outlives its record.
- Intents (``intents/<uuid>.json``): what a hook asked for (``apply`` with the domain XML, or
  ``remove``), written before anything else and without the lock, one file per domain (libvirt
  runs one domain's hooks one at a time; the latest wins). Whoever holds the lock next carries
  out every pending intent (intents.py), and deletes one only once it is done: a hook that ran
  out of time, lost the lock or was killed at any instant leaves its intent to the next one.
Records and the index are written atomically (rename) and only under the lock. Stdlib only: the
hook's stop path imports this.
"""

from __future__ import annotations

import fcntl
import json
import os
import time

from . import deadline
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
APPLY, REMOVE = "apply", "remove"  # intents


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
    index[uuid] = _entry(paths, uuid, data)
    _write_json(paths.index, index)


def replace_all(paths: Paths, records: dict[str, Data]) -> None:
    """Exactly these records and no others (sync), the index written once."""
    for uuid in set(uuids(paths)) - set(records):
        os.unlink(paths.record(uuid))
    for uuid, data in records.items():
        _write_json(paths.record(uuid), data)
    _write_json(paths.index, {uuid: _entry(paths, uuid, data) for uuid, data in records.items()})


def delete(paths: Paths, uuid: str, index: dict[str, Data] | None = None) -> None:
    if os.path.exists(paths.record(uuid)):
        os.unlink(paths.record(uuid))
    index = read_index(paths) if index is None else index
    if index.pop(uuid, None) is not None:
        _write_json(paths.index, index)


def read_index(paths: Paths) -> dict[str, Data]:
    """uuid -> {name, status, backend, claims, stamp}; rebuilt from the records unless it
    matches them exactly (the same domains, each record as stamped)."""
    present = uuids(paths)
    try:
        with open(paths.index, "rb") as handle:
            index = json.loads(handle.read())
        if (
            isinstance(index, dict)
            and sorted(index) == present
            and all(index[u].get("stamp") == _stamp(paths, u) for u in present)
        ):
            return index
    except (OSError, ValueError, AttributeError):
        pass
    index = {}
    for uuid in present:
        data = read(paths, uuid)
        if data is not None:
            index[uuid] = _entry(paths, uuid, data)
    return index


def _entry(paths: Paths, uuid: str, data: Data) -> Data:
    return {**{key: data.get(key) for key in INDEX_KEYS}, "stamp": _stamp(paths, uuid)}


def _stamp(paths: Paths, uuid: str) -> list[int] | None:
    try:
        st = os.stat(paths.record(uuid))
    except FileNotFoundError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


# -- intents --------------------------------------------------------------------------------


def write_intent(paths: Paths, uuid: str, op: str, name: str, xml: bytes = b"") -> None:
    """Ask for ``op`` (APPLY with the domain XML, or REMOVE): no lock; replaces any earlier one."""
    text = xml.decode("utf-8", "replace") if op == APPLY else ""
    _write_json(paths.intent(uuid), {"op": op, "name": name, "xml": text, "at": time.time()})


def take_intents(paths: Paths) -> dict[str, Data]:
    """Under the lock: take every pending intent (uuid -> intent). A taken intent stays on disk
    (``<uuid>.taken``) until ``done_intent``; a newer one, written meanwhile, supersedes it."""
    try:
        names = os.listdir(paths.intent_dir)
    except FileNotFoundError:
        return {}
    for name in sorted(names):
        if name.endswith(".json"):
            uuid = name[: -len(".json")]
            os.replace(paths.intent(uuid), paths.intent(uuid, taken=True))
    taken = {}
    for name in os.listdir(paths.intent_dir):
        if name.endswith(".taken"):
            uuid = name[: -len(".taken")]
            data = _read_json(paths.intent(uuid, taken=True))
            if isinstance(data, dict) and data.get("op") in (APPLY, REMOVE):
                taken[uuid] = data
            else:  # unreadable (a write cut short): nothing to carry out
                done_intent(paths, uuid)
    return taken


def done_intent(paths: Paths, uuid: str) -> None:
    if os.path.exists(paths.intent(uuid, taken=True)):
        os.unlink(paths.intent(uuid, taken=True))


def pending_intents(paths: Paths) -> dict[str, Data]:
    """Every intent not carried out yet (for status and the service; no lock: read only)."""
    try:
        names = sorted(os.listdir(paths.intent_dir))
    except FileNotFoundError:
        return {}
    pending = {}
    for name in names:  # "<uuid>.json" sorts before "<uuid>.taken": the newer one wins
        uuid, _, kind = name.rpartition(".")
        if kind in ("json", "taken") and uuid not in pending:
            data = _read_json(os.path.join(paths.intent_dir, name))
            if isinstance(data, dict):
                pending[uuid] = data
    return pending


def _read_json(path: str) -> object:
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except (OSError, ValueError):
        return None


class locked:
    """Serialise every change (hooks, waiters, CLI) on one flock."""

    def __init__(self, paths: Paths, timeout: float = 60.0) -> None:
        self.paths, self.timeout, self.fd = paths, timeout, -1

    def __enter__(self) -> None:
        os.makedirs(self.paths.run_dir, mode=0o755, exist_ok=True)
        self.fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        wait = deadline.remaining(self.timeout)
        until = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > until:
                    os.close(self.fd)
                    raise PortfwdError("lock busy", f"waited {wait:.1f} s", where=self.paths.lock, retry=True) from None
                time.sleep(0.005)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        os.close(self.fd)


def _write_json(path: str, data: object) -> None:
    """Whole or not at all (rename), root's only: intents and waiting records hold domain XML,
    which can carry secrets (a graphics password)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)
