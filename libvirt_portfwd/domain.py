"""Domain XML -> Domain: name, UUID, NICs and the forwards declared in <metadata>."""

from dataclasses import dataclass

from lxml import etree

from . import limits
from .errors import InputError, shown
from .forward import ForwardSpec, is_mac, name_problem, parse_spec
from .xmlparse import parse_xml

METADATA_NS = "urn:libvirt-portfwd:1"
METADATA_NS_PREFIX = "urn:libvirt-portfwd:"
METADATA_KEY = "portfwd"


@dataclass(frozen=True)
class Interface:
    """One ``<devices><interface>``; ``bridge`` is only known while the domain runs."""

    type: str
    mac: str | None
    network: str | None
    bridge: str | None


@dataclass(frozen=True)
class Domain:
    name: str
    uuid: str
    interfaces: tuple[Interface, ...]
    specs: tuple[ForwardSpec, ...]


def parse_domain(data: bytes, where: str = "domain XML") -> Domain:
    """Parse libvirt domain XML; raise InputError (naming the domain if known) on bad input."""
    limits.check_size(data, limits.DOMAIN_XML, where)
    root = parse_xml(data, "invalid domain XML", where)
    if root.tag != "domain":
        raise InputError(
            "invalid domain XML", f"root element is <{str(root.tag)[:80]}>, expected <domain>", where=where
        )
    name = (root.findtext("name") or "").strip()
    if not name:
        raise InputError("invalid domain XML", "no <name>", where=where)
    problem = name_problem(name)
    if problem:  # the name is printed (plan, status, the log): one line, never a rule
        raise InputError("invalid domain XML", f"<name> {problem}: {shown(name)}", where=where)
    uuid = _canonical_uuid((root.findtext("uuid") or "").strip())
    if uuid is None:
        raise InputError(
            "invalid domain XML", f"<uuid> is not a UUID: {shown(root.findtext('uuid'))}", where=where, domain=name
        )
    try:
        interfaces = tuple(_parse_interface(e, i) for i, e in enumerate(root.iterfind("devices/interface")))
        specs = _parse_metadata(root.find("metadata"))
    except InputError as exc:
        raise exc.for_domain(name) from None
    return Domain(name=name, uuid=uuid, interfaces=interfaces, specs=specs)


def _parse_interface(element: etree._Element, index: int) -> Interface:
    mac = element.find("mac")
    mac_address = mac.get("address", "").strip().lower() if mac is not None else ""
    if mac_address and not is_mac(mac_address):
        raise InputError(
            "invalid domain XML",
            f"expected a MAC address such as 52:54:00:12:34:56, got {shown(mac_address)}",
            where=f"interface[{index}] mac",
        )
    source = element.find("source")
    return Interface(
        type=element.get("type", ""),
        mac=mac_address or None,
        network=source.get("network") if source is not None else None,
        bridge=source.get("bridge") if source is not None else None,
    )


def _parse_metadata(metadata: etree._Element | None) -> tuple[ForwardSpec, ...]:
    if metadata is None:
        return ()
    ours = [e for e in metadata if isinstance(e.tag, str) and _namespace(e).startswith(METADATA_NS_PREFIX)]
    if not ours:
        return ()
    if len(ours) > 1:
        raise InputError("invalid metadata", f"{len(ours)} {METADATA_KEY} elements, expected one", where="metadata")
    top = ours[0]
    if _namespace(top) != METADATA_NS:
        raise InputError(
            "invalid metadata",
            f"unsupported namespace {shown(_namespace(top))}, expected {METADATA_NS!r}",
            where="metadata",
        )
    if etree.QName(top).localname != METADATA_KEY:
        raise InputError(
            "invalid metadata",
            f"root element <{etree.QName(top).localname[:60]}>, expected <{METADATA_KEY}>",
            where="metadata",
        )
    specs = []
    elements = _children(top, "metadata")
    limits.FORWARDS.check(len(elements), "metadata")  # counted before anything is parsed
    total = 0
    for index, element in enumerate(elements):
        where = f"metadata portForward[{index}]"
        _expect(element, "portForward", "metadata")
        children = _children(element, where)
        total += len(children)
        limits.RANGES.check(total, where)
        ranges = []
        for child in children:
            _expect(child, "range", where)
            ranges.append(_attributes(child))
        specs.append(parse_spec(_attributes(element), ranges, where))
    return tuple(specs)


def _attributes(element: etree._Element) -> dict[str, object]:
    return {str(key): str(value) for key, value in element.attrib.items()}


def _children(element: etree._Element, where: str) -> list[etree._Element]:
    text = (element.text or "").strip()
    if text:
        raise InputError("invalid metadata", f"unexpected text {shown(text)}", where=where)
    return [child for child in element if isinstance(child.tag, str)]


def _expect(element: etree._Element, localname: str, where: str) -> None:
    """Our elements are in our namespace (as libvirt stores them) or in none."""
    qname = etree.QName(element)
    if qname.localname != localname or qname.namespace not in (None, METADATA_NS):
        raise InputError(
            "invalid metadata", f"unexpected element <{qname.localname[:60]}>, expected <{localname}>", where=where
        )


def _namespace(element: etree._Element) -> str:
    return etree.QName(element).namespace or ""


def _canonical_uuid(text: str) -> str | None:
    """libvirt's forms (with or without dashes, any case) -> 8-4-4-4-12 lower case, else None."""
    digits = text.replace("-", "").lower()
    if len(digits) != 32 or not all(c in "0123456789abcdef" for c in digits):
        return None
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
