"""The YAML config -> Config: defaults, policy and forwards per domain.

A missing file means defaults. A broken file is an InputError naming the file, the key
path and the value. Parsed documents are cached (configcache) so that later hook runs do
not import a YAML parser.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TypeVar

from . import configcache, limits
from .backendnames import AUTO, CHOICES, expected
from .errors import InputError, label, shown
from .forward import ForwardSpec, PortRange, _parse_address, _parse_dev, parse_port, parse_spec

ON_ERROR = ("allow", "block")
TOP_KEYS = ("backend", "address", "dev", "lease_wait", "on_error", "metadata", "domains")
METADATA_KEYS = ("enabled", "ports", "guest_address")
DEFAULT_LEASE_WAIT = 300.0
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
class Config:
    path: str
    backend: str = AUTO
    address: IPv4Address | None = None
    dev: str | None = None
    lease_wait: float = DEFAULT_LEASE_WAIT
    on_error: str = "allow"
    metadata: MetadataPolicy = MetadataPolicy()
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
        domains=_domains(document.get("domains"), path),
    )


def _metadata_policy(raw: object, path: str) -> MetadataPolicy:
    if raw is None:
        return MetadataPolicy()
    if not isinstance(raw, Mapping):
        raise _bad(path, "metadata", raw, "expected a mapping")
    for key in raw:
        if key not in METADATA_KEYS:
            raise _bad(path, f"metadata.{key}", raw[key], f"unknown key (expected one of {', '.join(METADATA_KEYS)})")
    enabled, guest = raw.get("enabled", True), raw.get("guest_address", False)
    for key, value in (("enabled", enabled), ("guest_address", guest)):
        if not isinstance(value, bool):
            raise _bad(path, f"metadata.{key}", value, "expected true or false")
    ports = raw.get("ports", ["1-65535"])
    if isinstance(ports, (str, int)) and not isinstance(ports, bool):
        ports = [ports]
    if not isinstance(ports, list):
        raise _bad(path, "metadata.ports", ports, "expected a list of ports or ranges such as 1024-65535")
    parsed = []
    for i, item in enumerate(ports):
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise _bad(path, f"metadata.ports[{i}]", item, "expected a port or a range such as 1024-65535")
        low, dash, high = item.partition("-") if isinstance(item, str) else (item, "", "")
        if dash and not high:
            raise _bad(path, f"metadata.ports[{i}]", item, "range has no end")
        start = _setting(parse_port, low, path, f"metadata.ports[{i}]")
        end = _setting(parse_port, high, path, f"metadata.ports[{i}]") if high else start
        if end < start:
            raise _bad(path, f"metadata.ports[{i}]", item, "range ends below its start")
        parsed.append(PortRange(start, end, start))
    return MetadataPolicy(enabled=enabled, ports=tuple(parsed), guest_address=guest)


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
        domains[key.lower() if _is_uuid(key) else key] = tuple(
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


def _is_uuid(key: str) -> bool:
    parts = key.split("-")
    return [len(p) for p in parts] == [8, 4, 4, 4, 12] and all(c in "0123456789abcdefABCDEF" for c in "".join(parts))


def _bad(path: str, key: str, value: object, why: str) -> InputError:
    return InputError("invalid config", f"{why}, got {shown(value)}", where=f"{path}: {label(key)}")
