"""The README's `virsh metadata` form, stored by libvirt itself (its test:///default driver)."""

import subprocess

import libvirt

from libvirt_portfwd.domain import METADATA_KEY, METADATA_NS, parse_domain

README_METADATA = (
    '<portfwd><portForward proto="tcp" address="203.0.113.10">'
    '<range start="20443" to="443"/><range start="2080" to="80"/>'
    "</portForward></portfwd>"
)


def test_metadata_as_libvirt_stores_it_parses_to_the_declared_forwards() -> None:
    conn = libvirt.open("test:///default")
    try:
        dom = conn.lookupByName("test")
        dom.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            README_METADATA,
            METADATA_KEY,
            METADATA_NS,
            libvirt.VIR_DOMAIN_AFFECT_LIVE,
        )
        xml = dom.XMLDesc(0)
    finally:
        conn.close()
    assert '<portfwd:portForward proto="tcp" address="203.0.113.10">' in xml  # libvirt prefixes every child
    domain = parse_domain(xml.encode())
    [spec] = domain.specs
    assert (spec.proto, str(spec.address)) == ("tcp", "203.0.113.10")
    assert [(r.start, r.end, r.to) for r in spec.ranges] == [(20443, 20443, 443), (2080, 2080, 80)]


def test_readme_virsh_command_sets_what_the_parser_reads() -> None:
    """The exact command line the README gives (on the test driver's running domain, --live)."""
    command = f"metadata test --uri urn:libvirt-portfwd:1 --key portfwd --live --set '{README_METADATA}' ; dumpxml test"
    out = subprocess.run(
        ["virsh", "-q", "-c", "test:///default", command], capture_output=True, text=True, check=True
    ).stdout
    assert len(parse_domain(out.encode()).specs) == 1
