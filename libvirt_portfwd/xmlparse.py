"""One hardened lxml parser for every XML we read (domain, network, status files)."""

from lxml import etree

from .errors import InputError

_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True, remove_pis=True
)


def parse_xml(data: bytes, what: str, where: str) -> etree._Element:
    """Parse well-formed XML or raise InputError naming ``where``."""
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise InputError(what, f"not well-formed XML: {exc}", where=where) from None
    if root is None:
        raise InputError(what, "empty document", where=where)
    return root
