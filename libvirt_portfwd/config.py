"""The YAML config -> Config: defaults, policy and forwards per domain.

A missing file means defaults. A broken file is an InputError naming the file, the key
path and the value. Parsed documents are cached (configcache) so that later hook runs do
not import a YAML parser.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, TypeVar

from . import configcache, limits
from .backendnames import AUTO, CHOICES, expected
from .errors import InputError, label, shown
from .forward import PROTOCOLS, ForwardSpec, PortRange, _parse_address, _parse_dev, parse_port, parse_spec
from .paths import is_uuid

ON_ERROR = ("allow", "block")
TOP_KEYS = ("backend", "address", "dev", "lease_wait", "on_error", "metadata", "host_ports", "domains")
METADATA_KEYS = ("enabled", "ports", "guest_address")
HOST_PORTS_KEYS = ("allow",)
DEFAULT_LEASE_WAIT = 300.0
ALLOW_EXAMPLE = "22, tcp/22 or udp/5000-5010"
T = TypeVar("T")


@dataclass(frozen=True)
class MetadataPolicy:
    """What VM metadata may declare (the VM's XML is editable by whoever manages the VM)."""

    enabled: bool = True
    ports: tuple[PortRange, ...] = (PortRange(1, 65535, 1),)
    guest_address: bool = False

    def allows_port(self, start: int, end: int) -> bool:
        return any(r.start <= start and end <= r.end for r in self.ports)


@dataclass(frozen=True)
class HostPortsPolicy:
    """Host ports a forward may take although a host process listens on them (listeners.py):
    each entry a protocol (None: every protocol) and a port range."""

    allow: tuple[tuple[str | None, PortRange], ...] = ()

    def allows(self, proto: str, port: int) -> bool:
        return self.allows_range(proto, port, port)

    def allows_range(self, proto: str, start: int, end: int) -> bool:
        """Every port start..end (as one entry allows them: enough to skip reading the listeners)."""
        return any(p in (None, proto) and r.start <= start and end <= r.end for p, r in self.allow)


@dataclass(frozen=True)
class Config:
    path: str
    backend: str = AUTO
    address: IPv4Address | None = None
    dev: str | None = None
    lease_wait: float = DEFAULT_LEASE_WAIT
    on_error: str = "allow"
    metadata: MetadataPolicy = MetadataPolicy()
    host_ports: HostPortsPolicy = HostPortsPolicy()
    domains: dict[str, tuple[ForwardSpec, ...]] = field(default_factory=dict)

    def specs_for(self, name: str, uuid: str) -> tuple[ForwardSpec, ...]:
        return self.domains.get(uuid, ()) + self.domains.get(name, ())


def load_config(path: str, cache_path: str | None = None) -> Config:
    """Load and validate ``path``; a missing file is the default config."""
    entry = configcache.read_cache(cache_path, path) if cache_path else None
    if entry is None:
        entry = _parse_file(path)
        if cache_path:
            configcache.write_cache(cache_path, entry)
    if entry.get("error"):
        what, where, why = entry["error"]
        raise InputError(what, why, where=where)
    return build_config(entry["document"], path)


def _parse_file(path: str) -> dict:  # type: ignore[type-arg]
    """Read the YAML into a cache entry: the document, the names it declares, or its error."""
    signature = configcache.signature(path)
    entry: dict = {"path": path, "signature": signature, "document": {}, "keys": [], "on_error": "allow"}  # type: ignore[type-arg]
    if signature is None:
        return entry
    import yaml  # only here: the hook's fast path reads the cache

    from . import yamlload

    try:
        data = limits.read_file(path, limits.CONFIG_FILE, "config")
        document = yamlload.load(data, path) or {}
        config = build_config(document, path)
    except FileNotFoundError as exc:  # gone since signature(): as if read a moment later
        return {**entry, "error": ("cannot read config", path, exc.strerror or str(exc))}
    except yaml.YAMLError as exc:
        why = " ".join(str(exc).split())
        return {**entry, "error": ("invalid config", path, f"not valid YAML: {why[:300]}")}
    except InputError as exc:
        return {**entry, "error": (exc.what, exc.where, exc.why)}
    return {**entry, "document": document, "keys": sorted(config.domains), "on_error": config.on_error}


def build_config(document: object, path: str) -> Config:
    """Validate a parsed YAML document; errors name ``path`` and the key path."""
    if not isinstance(document, Mapping):
        raise InputError("invalid config", f"expected a mapping at the top, got {type(document).__name__}", where=path)
    for key in document:
        if key not in TOP_KEYS:
            raise _bad(path, str(key), document[key], f"unknown key (expected one of {', '.join(TOP_KEYS)})")
    backend = document.get("backend", AUTO)
    if backend not in CHOICES:
        raise _bad(path, "backend", backend, expected())
    on_error = document.get("on_error", "allow")
    if on_error not in ON_ERROR:
        raise _bad(path, "on_error", on_error, "expected allow or block")
    lease_wait = document.get("lease_wait", DEFAULT_LEASE_WAIT)
    if isinstance(lease_wait, bool) or not isinstance(lease_wait, (int, float)) or not 0 <= lease_wait <= 86400:
        raise _bad(path, "lease_wait", lease_wait, "expected seconds, 0-86400")
    address, dev = document.get("address"), document.get("dev")
    return Config(
        path=path,
        backend=backend,
        address=_setting(_parse_address, address, path, "address") if address else None,
        dev=_setting(_parse_dev, dev, path, "dev") if dev else None,
        lease_wait=float(lease_wait),
        on_error=on_error,
        metadata=_metadata_policy(document.get("metadata"), path),
        host_ports=_host_ports(document.get("host_ports"), path),
        domains=_domains(document.get("domains"), path),
    )


def _section(raw: object, path: str, name: str, keys: tuple[str, ...]) -> Mapping[Any, Any] | None:
    """A top-level mapping of known keys (None where the config has none)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise _bad(path, name, raw, "expected a mapping")
    for key in raw:
        if key not in keys:
            known = f"one of {', '.join(keys)}" if len(keys) > 1 else keys[0]
            raise _bad(path, f"{name}.{key}", raw[key], f"unknown key (expected {known})")
    return raw


def _metadata_policy(raw: object, path: str) -> MetadataPolicy:
    raw = _section(raw, path, "metadata", METADATA_KEYS)
    if raw is None:
        return MetadataPolicy()
    enabled, guest = raw.get("enabled", True), raw.get("guest_address", False)
    for key, value in (("enabled", enabled), ("guest_address", guest)):
        if not isinstance(value, bool):
            raise _bad(path, f"metadata.{key}", value, "expected true or false")
    ports = _port_list(raw.get("ports", ["1-65535"]), path, "metadata.ports", "1024-65535")
    parsed = [_port_range(item, path, f"metadata.ports[{i}]", "1024-65535") for i, item in enumerate(ports)]
    return MetadataPolicy(enabled=enabled, ports=tuple(parsed), guest_address=guest)


def _host_ports(raw: object, path: str) -> HostPortsPolicy:
    """``host_ports: {allow: [22, "8000-8100", "udp/53"]}``: a bare port or range is every protocol."""
    raw = _section(raw, path, "host_ports", HOST_PORTS_KEYS)
    if raw is None:
        return HostPortsPolicy()
    allow = _port_list(raw.get("allow", []), path, "host_ports.allow", ALLOW_EXAMPLE)
    return HostPortsPolicy(allow=tuple(_allowed(item, path, f"host_ports.allow[{i}]") for i, item in enumerate(allow)))


def _allowed(item: object, path: str, key: str) -> tuple[str | None, PortRange]:
    """One host_ports.allow entry: ``22``, ``"8000-8100"`` (every protocol) or ``"tcp/22"``."""
    proto, slash, ports = item.partition("/") if isinstance(item, str) else ("", "", item)
    if not slash:
        return None, _port_range(item, path, key, ALLOW_EXAMPLE)
    if proto.strip().lower() not in PROTOCOLS:
        raise _bad(path, key, item, f"expected tcp, udp or sctp before '/' (such as {ALLOW_EXAMPLE})")
    return proto.strip().lower(), _port_range(ports, path, key, ALLOW_EXAMPLE)


def _port_list(raw: object, path: str, key: str, example: str) -> list[object]:
    """A list of ports or ranges; one port or range alone is a list of one."""
    if isinstance(raw, (str, int)) and not isinstance(raw, bool):
        return [raw]
    if not isinstance(raw, list):
        raise _bad(path, key, raw, f"expected a list of ports or ranges such as {example}")
    return raw


def _port_range(item: object, path: str, key: str, example: str) -> PortRange:
    """A port (``443``, ``"443"``) or a range (``"1024-65535"``)."""
    if isinstance(item, bool) or not isinstance(item, (str, int)):
        raise _bad(path, key, item, f"expected a port or a range such as {example}")
    low, dash, high = item.partition("-") if isinstance(item, str) else (item, "", "")
    if dash and not high:
        raise _bad(path, key, item, "range has no end")
    start = _setting(parse_port, low, path, key)
    end = _setting(parse_port, high, path, key) if high else start
    if end < start:
        raise _bad(path, key, item, "range ends below its start")
    return PortRange(start, end, start)


def _domains(raw: object, path: str) -> dict[str, tuple[ForwardSpec, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _bad(path, "domains", raw, "expected a mapping of domain name or UUID to a list of forwards")
    domains = {}
    for key, forwards in raw.items():
        if not isinstance(key, str) or not key:
            raise _bad(path, "domains", key, "expected a domain name or UUID as key")
        if not isinstance(forwards, list):
            raise _bad(path, f"domains.{key}", forwards, "expected a list of forwards")
        where = f"{path}: domains.{label(key)}"
        limits.FORWARDS.check(len(forwards), where)
        domains[key.lower() if is_uuid(key.lower()) else key] = tuple(
            _forward(item, f"{where}[{i}]") for i, item in enumerate(forwards)
        )
    return domains


def _forward(item: object, where: str) -> ForwardSpec:
    if not isinstance(item, Mapping):
        raise InputError("invalid forward", f"expected a mapping, got {shown(item)}", where=where)
    attrs = {str(k): v for k, v in item.items() if k != "ranges"}
    if isinstance(attrs.get("source"), list):
        limits.SOURCES.check(len(attrs["source"]), f"{where}.source")
        if not all(isinstance(s, str) for s in attrs["source"]):
            raise InputError(
                "invalid forward", "expected a list of networks such as 198.51.100.0/24", where=f"{where}.source"
            )
        attrs["source"] = ",".join(attrs["source"])
    ranges = item.get("ranges")
    if not isinstance(ranges, list) or not ranges or not all(isinstance(r, Mapping) for r in ranges):
        raise InputError(
            "invalid forward", f"expected a list of {{start, end, to}}, got {shown(ranges)}", where=f"{where}.ranges"
        )
    return parse_spec(attrs, [{str(k): v for k, v in r.items()} for r in ranges], where, range_key="ranges")


def _setting(parse: Callable[[str, str, str], T], value: object, path: str, key: str) -> T:
    """A top-level setting parsed by forward's validators, reported as a config error."""
    try:
        huge = isinstance(value, int) and value.bit_length() > 64  # str() of 4,301 digits raises
        return parse(shown(value) if huge else str(value), f"{path}: {key}", "")
    except InputError as exc:
        raise InputError("invalid config", exc.why, where=exc.where) from None


def _bad(path: str, key: str, value: object, why: str) -> InputError:
    return InputError("invalid config", f"{why}, got {shown(value)}", where=f"{path}: {label(key)}")
