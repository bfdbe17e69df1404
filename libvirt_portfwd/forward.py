"""Forward specs: one declared forward, validated, in libvirt's passt vocabulary.

The same validation serves VM metadata (XML attributes, all strings) and the YAML
config (strings, integers, booleans), so both sources accept exactly the same forwards.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network

from .errors import InputError

PROTOCOLS = ("tcp", "udp", "sctp")
SPEC_KEYS = ("proto", "address", "dev", "source", "mac", "guest-address")
RANGE_KEYS = ("start", "end", "to", "exclude")

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_DEV = re.compile(r"[A-Za-z0-9_.:@-]{1,15}\+?")
_BOOL = {"yes": True, "no": False, "true": True, "false": False}


@dataclass(frozen=True)
class PortRange:
    """Host ports start..end (inclusive) to guest ports to..to+(end-start)."""

    start: int
    end: int
    to: int
    exclude: bool = False

    @property
    def to_end(self) -> int:
        return self.to + self.end - self.start

    def overlaps(self, other: "PortRange") -> bool:
        return self.start <= other.end and other.start <= self.end


@dataclass(frozen=True)
class ForwardSpec:
    """One ``<portForward>`` (or one config entry) as declared, validated, unresolved."""

    proto: str
    address: IPv4Address | None
    dev: str | None
    sources: tuple[IPv4Network, ...]
    mac: str | None
    guest_address: IPv4Address | None
    ranges: tuple[PortRange, ...]
    where: str


def parse_spec(
    attrs: Mapping[str, object], ranges: Sequence[Mapping[str, object]], where: str, range_key: str = "range"
) -> ForwardSpec:
    """Validate one forward's attributes and ranges; raise InputError naming the value."""
    for key in attrs:
        if key not in SPEC_KEYS:
            raise _bad(where, key, attrs[key], f"unknown attribute (expected one of {', '.join(SPEC_KEYS)})")
    proto = _text(attrs.get("proto", "tcp"), where, "proto").lower()
    if proto not in PROTOCOLS:
        raise _bad(where, "proto", proto, "expected tcp, udp or sctp")
    if not ranges:
        raise InputError("invalid forward", "no <range> (at least one port range is needed)", where=where)
    parsed = tuple(_parse_range(r, f"{where}.{range_key}[{i}]") for i, r in enumerate(ranges))
    if all(r.exclude for r in parsed):
        raise InputError("invalid forward", "every range is excluded: nothing to forward", where=where)
    return ForwardSpec(
        proto=proto,
        address=_optional(attrs, "address", where, _parse_address),
        dev=_optional(attrs, "dev", where, _parse_dev),
        sources=_optional(attrs, "source", where, _parse_sources) or (),
        mac=_optional(attrs, "mac", where, _parse_mac),
        guest_address=_optional(attrs, "guest-address", where, _parse_address),
        ranges=parsed,
        where=where,
    )


def _parse_range(raw: Mapping[str, object], where: str) -> PortRange:
    for key in raw:
        if key not in RANGE_KEYS:
            raise _bad(where, key, raw[key], f"unknown attribute (expected one of {', '.join(RANGE_KEYS)})")
    if "start" not in raw:
        raise InputError("invalid forward", "missing 'start' (the first host port)", where=where)
    start = _port(raw["start"], where, "start")
    end = _port(raw["end"], where, "end") if "end" in raw else start
    if end < start:
        raise _bad(where, "end", end, f"is below start {start}")
    exclude = _flag(raw["exclude"], where, "exclude") if "exclude" in raw else False
    if exclude and "to" in raw:
        raise _bad(where, "to", raw["to"], "an excluded range forwards nowhere, so it takes no 'to'")
    to = _port(raw["to"], where, "to") if "to" in raw else start
    if to + (end - start) > 65535:
        raise _bad(where, "to", to, f"guest ports {to}-{to + end - start} run past 65535")
    return PortRange(start, end, to, exclude)


def _optional(attrs: Mapping[str, object], key: str, where: str, parse):  # type: ignore[no-untyped-def]
    value = attrs.get(key)
    if value is None or value == "":
        return None
    return parse(_text(value, where, key), where, key)


def _text(value: object, where: str, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _bad(where, key, value, "expected a string")
    return str(value).strip()


def _port(value: object, where: str, key: str) -> int:
    if isinstance(value, bool):
        raise _bad(where, key, value, "expected a port 1-65535")
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise _bad(where, key, value, "expected a port 1-65535")
    return int(text)


def _flag(value: object, where: str, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOL:
        return _BOOL[value.strip().lower()]
    raise _bad(where, key, value, "expected yes or no")


def _parse_address(text: str, where: str, key: str) -> IPv4Address:
    try:
        address = ip_address(text)
    except ValueError:
        raise _bad(where, key, text, "expected an IPv4 address") from None
    if not isinstance(address, IPv4Address):
        raise _bad(where, key, text, "IPv6 forwards are not supported")
    if address.is_unspecified or address.is_multicast or address.is_loopback:
        raise _bad(where, key, text, "expected a unicast, non-loopback address")
    return address


def _parse_sources(text: str, where: str, key: str) -> tuple[IPv4Network, ...]:
    sources = []
    for item in text.split(","):
        try:
            network = ip_network(item.strip())
        except ValueError as exc:
            raise _bad(where, key, item.strip(), f"expected an IPv4 network such as 198.51.100.0/24 ({exc})") from None
        if not isinstance(network, IPv4Network):
            raise _bad(where, key, item.strip(), "IPv6 sources are not supported")
        sources.append(network)
    return tuple(sorted(set(sources)))


def _parse_mac(text: str, where: str, key: str) -> str:
    mac = text.lower()
    if not _MAC.fullmatch(mac):
        raise _bad(where, key, text, "expected a MAC address such as 52:54:00:12:34:56")
    return mac


def _parse_dev(text: str, where: str, key: str) -> str:
    if not _DEV.fullmatch(text) or text in (".", ".."):
        raise _bad(where, key, text, "expected a network interface name")
    return text


def _bad(where: str, key: str, value: object, why: str) -> InputError:
    return InputError("invalid forward", f"{why}, got {value!r}", where=f"{where}.{key}" if key else where)
