"""Forward specs: one declared forward, validated, in libvirt's passt vocabulary.

The same validation serves VM metadata (XML attributes, all strings) and the YAML
config (strings, integers, booleans), so both sources accept exactly the same forwards.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network

from . import limits
from .errors import InputError, label, shown

PROTOCOLS = ("tcp", "udp", "sctp")
SPEC_KEYS = ("proto", "address", "dev", "source", "mac", "guest-address")
RANGE_KEYS = ("start", "end", "to", "exclude")

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# An interface name as iptables and nft take it (IFNAMSIZ - 1 characters, ``+`` a wildcard at the
# end); never one that looks like an option (``-j``, ``--goto``).
_DEV = re.compile(r"[A-Za-z0-9_.:@][A-Za-z0-9_.:@-]{0,14}\+?")
_DIGITS = frozenset("0123456789")  # str.isdigit() is true for '²' and other non-ASCII digits
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
    limits.RANGES.check(len(ranges), where)  # one forward's share of the domain's (checked in plan)
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
    start = parse_port(raw["start"], where, "start")
    end = parse_port(raw["end"], where, "end") if "end" in raw else start
    if end < start:
        raise _bad(where, "end", end, f"is below start {start}")
    exclude = _flag(raw["exclude"], where, "exclude") if "exclude" in raw else False
    if exclude and "to" in raw:
        raise _bad(where, "to", raw["to"], "an excluded range forwards nowhere, so it takes no 'to'")
    to = parse_port(raw["to"], where, "to") if "to" in raw else start
    if to + (end - start) > 65535:
        raise _bad(where, "to", to, f"guest ports {to}-{to + end - start} run past 65535")
    return PortRange(start, end, to, exclude)


def _optional(attrs: Mapping[str, object], key: str, where: str, parse):  # type: ignore[no-untyped-def]
    value = attrs.get(key)
    if value is None or value == "":
        return None
    return parse(_text(value, where, key), where, key)


def _text(value: object, where: str, key: str) -> str:
    if (
        isinstance(value, bool)
        or not isinstance(value, (str, int))
        or (isinstance(value, int) and value.bit_length() > 64)
    ):
        raise _bad(where, key, value, "expected a string")
    return str(value).strip()


def parse_port(value: object, where: str, key: str) -> int:
    """A port 1-65535: an integer, or its ASCII decimal digits without a leading zero (``017`` is
    not octal 15 and not 17: it is refused, as YAML 1.1 and C would each read it otherwise)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 65535:
            raise _bad(where, key, value, "expected a port 1-65535")
        return value
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > limits.PORT_DIGITS or not _DIGITS.issuperset(text):
        raise _bad(where, key, value, "expected a port 1-65535")
    if text[0] == "0" and len(text) > 1:
        raise _bad(where, key, value, "expected a port 1-65535 without a leading zero")
    port = int(text)
    if not 1 <= port <= 65535:
        raise _bad(where, key, value, "expected a port 1-65535")
    return port


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
    items = text.split(",")
    limits.SOURCES.check(len(items), f"{where}.{key}")
    for item in items:
        try:
            network = ip_network(item.strip())
        except ValueError as exc:
            why = f"expected an IPv4 network such as 198.51.100.0/24 ({str(exc)[:100]})"
            raise _bad(where, key, item.strip(), why) from None
        if not isinstance(network, IPv4Network):
            raise _bad(where, key, item.strip(), "IPv6 sources are not supported")
        sources.append(network)
    return tuple(sorted(set(sources)))


def _parse_mac(text: str, where: str, key: str) -> str:
    mac = text.lower()
    if not is_mac(mac):
        raise _bad(where, key, text, "expected a MAC address such as 52:54:00:12:34:56")
    return mac


def name_problem(text: str) -> str | None:
    """Why a domain or network name (ours to print, never to put in a rule) is refused, or None.
    libvirt itself refuses these; values from its files are checked like user input."""
    if not text:
        return "is empty"
    if len(text.encode(errors="replace")) > limits.NAME_BYTES.value:
        return f"is longer than {limits.NAME_BYTES.value} bytes ({limits.NAME_BYTES.name})"
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return "holds a control character (newline, tab, ...)"
    return None


def is_mac(text: str) -> bool:
    """A MAC address as libvirt writes it (lower case): also for MACs from libvirt's own files."""
    return bool(_MAC.fullmatch(text))


def _parse_dev(text: str, where: str, key: str) -> str:
    if not is_ifname(text, wildcard=True):
        why = (
            "an interface name may not start with '-'" if text.startswith("-") else "expected a network interface name"
        )
        raise _bad(where, key, text, why)
    return text


def is_ifname(text: str, *, wildcard: bool = False) -> bool:
    """A network interface name (``wildcard``: ``eth+``, as iptables matches a prefix); never
    one that looks like an option. Also for the bridge names libvirt's own files hold."""
    return bool(_DEV.fullmatch(text)) and text not in (".", "..") and (wildcard or not text.endswith("+"))


def _bad(where: str, key: str, value: object, why: str) -> InputError:
    return InputError("invalid forward", f"{why}, got {shown(value)}", where=f"{where}.{label(key)}" if key else where)
