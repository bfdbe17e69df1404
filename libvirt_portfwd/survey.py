"""What ``doctor``'s checks look at: the host, read once, and one domain or forward at a time.

A check is a small function of one of three contexts (doctor.py lists them in hop order):
``Survey`` (the host: config, recorded state, pending intents, libvirt's networks and leases),
``DomainView`` (one recorded domain) and ``ForwardView`` (one of its forwards). Everything here
is read only: the config is parsed without its cache (which a load would write), and no lock is
taken. What this user may not read (the state files are root's only) is noted in ``unreadable``
and reported once, so that a run as non-root makes fewer checks and says so.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import cached_property

from . import state
from .config import Config, load_config
from .errors import PortfwdError
from .findings import WARN, Finding
from .leases import Lease, lease_path, read_leases
from .model import Forward
from .network import Networks, load_networks
from .paths import Paths
from .records import Record, load_record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .listeners import Listener

AS_ROOT = "# as root:\nlibvirt-portfwd doctor"


@dataclass
class Survey:
    paths: Paths
    asked: str | None = None  # the DOMAIN asked about (name or UUID), None: every domain
    now: float = field(default_factory=time.time)
    records: list[Record] = field(default_factory=list)
    bad_records: dict[str, PortfwdError] = field(default_factory=dict)  # uuid -> why it does not load
    intents: dict[str, state.Data] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (what, path) this user may not read
    _leases: dict[str, list[Lease] | PortfwdError] = field(default_factory=dict, init=False, repr=False)

    @cached_property
    def config(self) -> Config | PortfwdError:
        try:
            return load_config(self.paths.config)
        except PortfwdError as exc:
            return exc
        except OSError as exc:  # its directory not searchable by this user
            return PortfwdError("cannot read config", exc.strerror or str(exc), where=self.paths.config)

    @cached_property
    def networks(self) -> Networks | PortfwdError:
        try:
            return load_networks(self.paths.network_dir)
        except PortfwdError as exc:
            return exc

    def leases(self, bridge: str) -> list[Lease] | PortfwdError:
        """Every entry of the bridge's lease file, expired ones included (read once)."""
        if bridge not in self._leases:
            try:
                self._leases[bridge] = read_leases(lease_path(self.paths.dnsmasq_dir, bridge))
            except PortfwdError as exc:
                self._leases[bridge] = exc
        return self._leases[bridge]

    @cached_property
    def firewall(self) -> list[Finding]:
        """The firewall hops read back, as findings (firewallcheck.py), for every check."""
        from .findings import firewall
        from .firewallcheck import firewall_findings

        config = self.config
        backend = "auto" if isinstance(config, PortfwdError) else config.backend
        live = {r.uuid: r.name for r in self.records if r.status == "live"}
        bridges = tuple(sorted({f.bridge for r in self.records for f in r.forwards}))
        try:
            return firewall_findings(backend, self.paths.network_dir, live, bridges)
        except (PortfwdError, OSError) as exc:
            return [firewall("rules.unreadable", WARN, "the firewall could not be read", str(exc), AS_ROOT)]

    @cached_property
    def listeners(self) -> tuple[Listener, ...] | PortfwdError:
        """The listening sockets of this network namespace (listeners.py)."""
        from .listeners import read_listeners

        try:
            return read_listeners(("tcp", "udp"))
        except OSError as exc:
            return PortfwdError("cannot read the listening sockets", exc.strerror or str(exc))

    def owner(self, inode: int) -> str | None:
        from .listeners import owner

        return owner(inode)

    @property
    def systemd(self) -> bool:
        return os.path.isdir(self.paths.systemd_dir)

    def domains(self) -> list[DomainView]:
        """Every domain with a record or a pending intent (or the one asked about), by name."""
        records = {r.uuid: r for r in self.records}
        uuids = sorted(set(records) | set(self.intents) | set(self.bad_records))
        views = [
            DomainView(
                self,
                uuid,
                records[uuid].name if uuid in records else str(self.intents.get(uuid, {}).get("name") or "?"),
                records.get(uuid),
                self.intents.get(uuid),
                self.bad_records.get(uuid),
            )
            for uuid in uuids
        ]
        if self.asked is not None:
            views = [v for v in views if self.asked in (v.name, v.uuid) or self.asked.lower() == v.uuid]
            if not views:
                views = [DomainView(self, "", self.asked, None, None, None)]
        return sorted(views, key=lambda v: (v.name, v.uuid))


@dataclass(frozen=True)
class DomainView:
    survey: Survey
    uuid: str  # "" for a domain asked about that nothing is recorded for
    name: str
    record: Record | None
    intent: state.Data | None
    error: PortfwdError | None  # its record does not load

    @property
    def forwards(self) -> list[ForwardView]:
        return [ForwardView(self, f) for f in self.record.forwards] if self.record else []


@dataclass(frozen=True)
class ForwardView:
    domain: DomainView
    forward: Forward

    @property
    def survey(self) -> Survey:
        return self.domain.survey

    @property
    def subject(self) -> str:
        return f"{self.domain.name} {self.forward.claim}"


def survey(paths: Paths, asked: str | None = None, now: float | None = None) -> Survey:
    """Read the recorded state (and what of it this user may not read)."""
    found = Survey(paths, asked, time.time() if now is None else now)
    try:
        uuids = state.uuids(paths)
    except PermissionError:
        found.unreadable.append(("the recorded state", paths.state_dir))
        uuids = []
    for uuid in uuids:
        try:
            record = load_record(paths, uuid)
        except PortfwdError as exc:
            found.bad_records[uuid] = exc
            continue
        if record is not None:
            found.records.append(record)
    try:
        found.intents = state.pending_intents(paths)
    except PermissionError:
        found.unreadable.append(("the pending intents", paths.intent_dir))
    return found


def unreadable(what: str, path: str, exc: Exception) -> Finding:
    """The finding for what this user may not read: the checks that need it are skipped."""
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return Finding(
        "doctor.access",
        WARN,
        "host",
        f"cannot read {what} as uid {os.geteuid()}: the checks that need it are skipped",
        f"{path}: {why}",
        "# as root:\nlibvirt-portfwd doctor",
    )


def when(epoch: float) -> str:
    """A time as the checks print it: local, to the second, with the zone."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch))
