"""Every firewall object name and its limits, derived from the domain UUID (never its name)."""

PROJECT = "libvirt-portfwd"
DISPATCH_CHAIN = "PORTFWD"  # ours, in nat and filter; jumped to from the hook chains
DOMAIN_CHAIN_PREFIX = "PF-"
IPTABLES_CHAIN_MAX = 28  # xtables: XT_EXTENSION_MAXNAMELEN - 1 (29) less one for safety


def domain_chain(uuid: str) -> str:
    """``PF-`` + the UUID's first 25 hex digits (100 bits): unique, and within 28 characters."""
    name = DOMAIN_CHAIN_PREFIX + uuid.replace("-", "").lower()[: IPTABLES_CHAIN_MAX - len(DOMAIN_CHAIN_PREFIX)]
    assert len(name) <= IPTABLES_CHAIN_MAX
    return name


def tag(uuid: str | None = None) -> str:
    """The comment every rule carries: the project, and the owning domain's UUID."""
    return f"{PROJECT}:{uuid}" if uuid else PROJECT
