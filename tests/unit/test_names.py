"""Firewall object names: from the domain UUID, within iptables' 28 characters."""

from __future__ import annotations

from libvirt_portfwd import names

UUID = "4f0c6a2e-8b1d-4c3e-9a5f-7d2b1e0c9a84"


def test_domain_chain() -> None:
    chain = names.domain_chain(UUID)
    assert chain == "PFJ4GGULULDVGD5GS7PUVR4DE2QQ"  # base32 of the UUID's 16 bytes
    assert len(chain) == names.IPTABLES_CHAIN_MAX == 28
    assert names.domain_chain(UUID.upper()) == chain
    assert names.is_domain_chain(chain)
    assert not names.is_domain_chain("PFSENSE") and not names.is_domain_chain("PORTFWD")


def test_tags() -> None:
    assert names.tag() == "libvirt-portfwd"
    assert names.tag(UUID) == f"libvirt-portfwd:{UUID}"


def test_uuids_differing_at_the_end_get_different_chains() -> None:
    first = "00000000-0000-0000-0000-000000000001"
    second = "00000000-0000-0000-0000-000000000002"
    assert names.domain_chain(first) != names.domain_chain(second)
