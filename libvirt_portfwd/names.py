"""Every firewall object name and its limits, derived from the domain UUID (never its name)."""

import base64
from functools import cache

PROJECT = "libvirt-portfwd"
BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
DISPATCH_CHAIN = "PORTFWD"
NFT_TABLE = "libvirt_portfwd"  # ours: table ip libvirt_portfwd
LIBVIRT_NFT_TABLE = "libvirt_network"  # libvirt's (libvirt >= 10.4 with firewall_backend nftables)
LIBVIRT_NFT_GATE_CHAIN = "guest_input"  # where libvirt rejects what enters its networks
# The conntrack mark bit our DNAT sets, so that one rule in libvirt's table can let exactly our
# forwarded connections through. One bit, or-ed in: other users of the ct mark keep theirs.
CT_MARK = 0x20000000  # ours, in nat and filter; jumped to from the hook chains
DOMAIN_CHAIN_PREFIX = "PF"
# Under libvirt's nftables firewall, beside a neighbour whose iptables-nft ``ip filter`` FORWARD
# drops (Docker, ufw): our accept chain there, jumped from the place the neighbour documents
# (Docker's DOCKER-USER, else the top of FORWARD), and one chain per domain under it (the
# iptables backend's filter accepts, the same text). Names of their own: the iptables backend
# never takes them for its PORTFWD / PF<uuid> chains.
ACCEPT_CHAIN = "PORTFWD_ACCEPT"
ACCEPT_CHAIN_PREFIX = "PA"
DOCKER_USER_CHAIN = "DOCKER-USER"  # Docker's place for its users' rules, jumped first from FORWARD
IPTABLES_CHAIN_MAX = 28  # iptables: chain names up to 28 characters (XT_EXTENSION_MAXNAMELEN - 1 - 2)


@cache
def domain_chain(uuid: str, prefix: str = DOMAIN_CHAIN_PREFIX) -> str:
    """``PF`` (or ``prefix``) + the whole UUID in base32 (26 characters): unique, and exactly 28
    characters.

    Hex would need 32 characters; any shortening of it lets UUIDs that differ only in the
    dropped digits share a chain. The rules' comments carry the UUID in its usual form.
    """
    encoded = base64.b32encode(bytes.fromhex(uuid.replace("-", ""))).decode().rstrip("=")
    name = prefix + encoded
    assert len(name) <= IPTABLES_CHAIN_MAX
    return name


def uuid_of_chain(name: str) -> str:
    """domain_chain() reversed."""
    raw = base64.b32decode(name[len(DOMAIN_CHAIN_PREFIX) :] + "======").hex()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def is_domain_chain(name: str, prefix: str = DOMAIN_CHAIN_PREFIX) -> bool:
    """Exactly the shape domain_chain() makes: how sync knows a stale chain is ours."""
    return len(name) == IPTABLES_CHAIN_MAX and name.startswith(prefix) and all(c in BASE32 for c in name[len(prefix) :])


def tag(uuid: str | None = None) -> str:
    """The comment every rule carries: the project, and the owning domain's UUID."""
    return f"{PROJECT}:{uuid}" if uuid else PROJECT
