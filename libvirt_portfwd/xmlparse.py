"""One hardened lxml parser for every XML we read (domain, network, status files).

No entity is expanded, nothing is fetched, and a document with a DTD is refused whole; libxml2
(without huge_tree) refuses nesting deeper than 256 and text nodes over 10 MB itself.
"""

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
        raise InputError(what, f"not well-formed XML: {str(exc)[:200]}", where=where) from None
    if root is None:
        raise InputError(what, "empty document", where=where)
    if getattr(root.getroottree().docinfo, "doctype", ""):  # entities and external references come only with a DTD
        raise InputError(what, "a <!DOCTYPE> (libvirt never writes one; entities are not read)", where=where)
    return root
