"""Domain XML: name, UUID, NICs, and the forwards in <metadata> in every form libvirt stores."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from libvirt_portfwd.domain import Interface, parse_domain
from libvirt_portfwd.errors import InputError
from libvirt_portfwd.forward import PortRange

from .helpers import MAC1, MAC2, NS, UUID, domain, domain_xml, forward, nic, portfwd


def error_of(xml: bytes) -> str:
    with pytest.raises(InputError) as caught:
        parse_domain(xml)
    message = str(caught.value)
    assert message.startswith("libvirt-portfwd: ") and "\n" not in message
    return message


# What `virsh metadata web1 --uri urn:libvirt-portfwd:1 --key portfwd --set '<portfwd>...' --config`
# leaves in the domain XML (LAB-NOTES.md, "Metadata set with virsh").
VIRSH_STORED = """<metadata>
    <portfwd:portfwd xmlns:portfwd="urn:libvirt-portfwd:1">
      <portfwd:portForward proto="tcp" address="203.0.113.1">
        <portfwd:range start="2080" to="80"/>
      </portfwd:portForward>
    </portfwd:portfwd>
  </metadata>"""


def test_metadata_as_virsh_stores_it() -> None:
    xml = domain_xml().replace(b"<devices>", VIRSH_STORED.encode() + b"<devices>")
    d = parse_domain(xml)
    assert len(d.specs) == 1
    s = d.specs[0]
    assert (s.proto, s.address, s.ranges, s.where) == (
        "tcp",
        IPv4Address("203.0.113.1"),
        (PortRange(2080, 2080, 80),),
        "metadata portForward[0]",
    )


def test_default_namespace_children() -> None:
    """What the API's get returns, or an admin writes by hand: a default xmlns, no prefix."""
    meta = f'<portfwd xmlns="{NS}"><portForward proto="udp"><range start="5353" to="53"/></portForward></portfwd>'
    d = parse_domain(domain_xml(meta))
    assert [(s.proto, s.ranges) for s in d.specs] == [("udp", (PortRange(5353, 5353, 53),))]


def test_unprefixed_children_in_no_namespace() -> None:
    meta = f'<pf:portfwd xmlns:pf="{NS}"><portForward><range start="8080" to="80"/></portForward></pf:portfwd>'
    assert [s.ranges for s in parse_domain(domain_xml(meta)).specs] == [(PortRange(8080, 8080, 80),)]


def test_any_prefix() -> None:
    """Match by namespace URI, never by prefix."""
    meta = (
        f'<x:portfwd xmlns:x="{NS}"><x:portForward><x:range start="8080" to="80"/></x:portForward>'
        f"<x:portForward proto='udp'><x:range start='9000' end='9001'/></x:portForward></x:portfwd>"
    )
    d = parse_domain(domain_xml(meta))
    assert [(s.proto, s.where) for s in d.specs] == [
        ("tcp", "metadata portForward[0]"),
        ("udp", "metadata portForward[1]"),
    ]


def test_several_forwards_and_ranges() -> None:
    d = domain(
        forward({"proto": "tcp", "address": "203.0.113.10"}, {"start": 20443, "to": 443}),
        forward(
            {"proto": "udp", "mac": MAC2}, {"start": 5000, "end": 5010, "to": 6000}, {"start": 5005, "exclude": "yes"}
        ),
    )
    assert [s.proto for s in d.specs] == ["tcp", "udp"]
    assert d.specs[1].mac == MAC2
    assert d.specs[1].ranges == (PortRange(5000, 5010, 6000), PortRange(5005, 5005, 5005, exclude=True))


def test_other_applications_metadata_is_ignored() -> None:
    meta = (
        '<app1:foo xmlns:app1="http://foo.org/">fooish</app1:foo>'
        '<lease:lease xmlns:lease="http://example.com/lease/1"><until>tomorrow</until></lease:lease>'
        + portfwd(forward())
        + '<app2:bar xmlns:app2="http://bar.com/" maman="baz">barish</app2:bar>'
    )
    assert len(parse_domain(domain_xml(meta)).specs) == 1
    assert parse_domain(domain_xml('<app1:foo xmlns:app1="http://foo.org/">fooish</app1:foo>')).specs == ()


def test_no_metadata_no_specs() -> None:
    assert parse_domain(domain_xml()).specs == ()
    assert parse_domain(domain_xml("<!-- nothing -->")).specs == ()


def test_empty_portfwd_element() -> None:
    assert parse_domain(domain_xml(portfwd())).specs == ()


def test_comments_inside_our_metadata() -> None:
    meta = f'<portfwd xmlns="{NS}"><!-- web --><portForward><!-- r --><range start="80"/></portForward></portfwd>'
    assert len(parse_domain(domain_xml(meta)).specs) == 1


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (
            portfwd(forward(), ns="urn:libvirt-portfwd:2"),
            "libvirt-portfwd: web1: invalid metadata (metadata): unsupported namespace "
            "'urn:libvirt-portfwd:2', expected 'urn:libvirt-portfwd:1'",
        ),
        (
            portfwd(forward()) + portfwd(forward(), ns="urn:libvirt-portfwd:2"),
            "libvirt-portfwd: web1: invalid metadata (metadata): 2 portfwd elements, expected one",
        ),
        (
            f'<pf:forwards xmlns:pf="{NS}"/>',
            "libvirt-portfwd: web1: invalid metadata (metadata): root element <forwards>, expected <portfwd>",
        ),
        (
            f'<portfwd xmlns="{NS}"><portforward><range start="80"/></portforward></portfwd>',
            "libvirt-portfwd: web1: invalid metadata (metadata): unexpected element <portforward>, "
            "expected <portForward>",
        ),
        (
            f'<portfwd xmlns="{NS}"><portForward><port start="80"/></portForward></portfwd>',
            "libvirt-portfwd: web1: invalid metadata (metadata portForward[0]): unexpected element <port>, "
            "expected <range>",
        ),
        (
            f'<portfwd xmlns="{NS}"><portForward><o:range xmlns:o="urn:other" start="80"/></portForward></portfwd>',
            "libvirt-portfwd: web1: invalid metadata (metadata portForward[0]): unexpected element <range>, "
            "expected <range>",
        ),
        (
            f'<portfwd xmlns="{NS}">tcp 8080 80</portfwd>',
            "libvirt-portfwd: web1: invalid metadata (metadata): unexpected text 'tcp 8080 80'",
        ),
        (
            f'<portfwd xmlns="{NS}"><portForward>8080<range start="80"/></portForward></portfwd>',
            "libvirt-portfwd: web1: invalid metadata (metadata portForward[0]): unexpected text '8080'",
        ),
        (
            portfwd(forward({"proto": "tcp"}, {"start": 20080, "to": 80}, {"start": "http", "to": 80})),
            "libvirt-portfwd: web1: invalid forward (metadata portForward[0].range[1].start): "
            "expected a port 1-65535, got 'http'",
        ),
        (
            portfwd(forward(), forward({"proto": "tcp", "adress": "203.0.113.1"})),
            "libvirt-portfwd: web1: invalid forward (metadata portForward[1].adress): unknown attribute "
            "(expected one of proto, address, dev, source, mac, guest-address), got '203.0.113.1'",
        ),
        (
            portfwd("<portfwd:portForward proto='tcp'></portfwd:portForward>"),
            "libvirt-portfwd: web1: invalid forward (metadata portForward[0]): "
            "no <range> (at least one port range is needed)",
        ),
    ],
    ids=[
        "namespace-v2",
        "two-portfwd-elements",
        "wrong-root",
        "wrong-case-portforward",
        "wrong-range-element",
        "range-in-other-namespace",
        "text-in-root",
        "text-in-forward",
        "bad-port",
        "unknown-attribute",
        "no-range",
    ],
)
def test_bad_metadata(meta: str, message: str) -> None:
    assert error_of(domain_xml(meta)) == message


def test_future_namespace_version_is_refused_not_ignored() -> None:
    """A VM written for a newer release must not silently lose its forwards."""
    meta = '<portfwd xmlns="urn:libvirt-portfwd:10"><portForward><range start="80"/></portForward></portfwd>'
    assert "unsupported namespace 'urn:libvirt-portfwd:10'" in error_of(domain_xml(meta))


def test_interfaces() -> None:
    d = parse_domain(
        domain_xml(
            nics=[
                nic(MAC1.upper(), network="default", bridge="virbr0"),
                nic(MAC2, network=None, type_="bridge", bridge="br0"),
                nic(None, network="default"),
                "<interface type='user'><mac address='52:54:00:00:00:09'/></interface>",
            ]
        )
    )
    assert d.interfaces == (
        Interface(type="network", mac=MAC1, network="default", bridge="virbr0"),
        Interface(type="bridge", mac=MAC2, network=None, bridge="br0"),
        Interface(type="network", mac=None, network="default", bridge=None),
        Interface(type="user", mac="52:54:00:00:00:09", network=None, bridge=None),
    )


def test_uuid_is_normalised() -> None:
    assert parse_domain(domain_xml(uuid=UUID.upper())).uuid == UUID
    assert parse_domain(domain_xml(uuid=UUID.replace("-", ""))).uuid == UUID


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (
            b"<domain><name>web1</name>",
            "libvirt-portfwd: invalid domain XML (domain XML): not well-formed XML: Premature end of data in "
            "tag domain line 1, line 1, column 26 (<string>, line 1)",
        ),
        (b"", "libvirt-portfwd: invalid domain XML (domain XML): not well-formed XML: "),
        (
            b"<network><name>default</name></network>",
            "libvirt-portfwd: invalid domain XML (domain XML): root element is <network>, expected <domain>",
        ),
        (
            b"<domain><uuid>" + UUID.encode() + b"</uuid></domain>",
            "libvirt-portfwd: invalid domain XML (domain XML): no <name>",
        ),
        (
            b"<domain><name>web1</name><uuid>not-a-uuid</uuid></domain>",
            "libvirt-portfwd: web1: invalid domain XML (domain XML): <uuid> is not a UUID: 'not-a-uuid'",
        ),
        (
            b"<!DOCTYPE d [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><domain><name>&e;</name></domain>",
            "libvirt-portfwd: invalid domain XML (domain XML): a <!DOCTYPE> (libvirt never writes one",
        ),
    ],
    ids=["truncated", "empty", "network-xml", "no-name", "bad-uuid", "external-entity"],
)
def test_bad_domain_xml(xml: bytes, message: str) -> None:
    assert error_of(xml).startswith(message)
