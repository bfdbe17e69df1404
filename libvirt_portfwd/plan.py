"""Specs + addresses -> Plan: one domain's resolved forwards. Pure; conflicts are found here.

A forward only ever reaches its own domain: the target is one of the domain's own NICs on
a libvirt network, and an explicit guest address must lie inside that network's subnet.
"""

from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address
from typing import Any

from . import limits
from .config import Config
from .domain import Domain, Interface
from .errors import ConflictError, InputError, PortfwdError
from .forward import ForwardSpec, PortRange
from .listeners import Listener, captured
from .model import Claim, Forward, Plan
from .network import Network

__all__ = [
    "Claim",
    "Forward",
    "LeaseLookup",
    "Plan",
    "build_plan",
    "check_listeners",
    "collect_specs",
    "count_rules",
    "effective_ranges",
    "find_conflicts",
]

ROUTABLE_MODES = ("nat", "route", "open")


LeaseLookup = Callable[[str], dict[str, IPv4Address]]  # bridge -> MAC -> address


def collect_specs(domain: Domain, config: Config) -> tuple[ForwardSpec, ...]:
    """The config's forwards for the domain plus its metadata's, where policy allows them."""
    policy = config.metadata
    specs = config.specs_for(domain.name, domain.uuid) + domain.specs
    where = (
        "metadata and config"
        if domain.specs and len(specs) > len(domain.specs)
        else ("metadata" if domain.specs else config.path)
    )
    limits.FORWARDS.check(len(specs), where)
    limits.RANGES.check(sum(len(s.ranges) for s in specs), where)
    limits.EXCLUDED.check(sum(r.exclude for s in specs for r in s.ranges), where)
    if domain.specs and not policy.enabled:
        raise InputError(
            "forward refused", "VM metadata may not declare forwards here", where=f"{config.path}: metadata.enabled"
        )
    for spec in domain.specs:
        if spec.guest_address is not None and not policy.guest_address:
            raise InputError(
                "forward refused",
                "metadata may not set guest-address (allow it with metadata.guest_address), "
                f"got '{spec.guest_address}'",
                where=f"{spec.where}.guest-address",
            )
        for r in spec.ranges:
            if not r.exclude and not policy.allows_port(r.start, r.end):
                ports = str(r.start) if r.start == r.end else f"{r.start}-{r.end}"
                raise InputError(
                    "forward refused",
                    f"host port {ports} is outside the ports metadata may claim (metadata.ports in {config.path})",
                    where=spec.where,
                )
    return specs


def build_plan(
    domain: Domain, specs: Iterable[ForwardSpec], config: Config, networks: dict[str, Network], leases: LeaseLookup
) -> Plan:
    forwards: list[Forward] = []
    for spec in specs:
        nic, network = _target(domain, spec, networks)
        assert network.bridge is not None and nic.mac is not None
        guest = _guest_address(spec, nic.mac, network, leases)
        ranges = effective_ranges(spec.ranges)
        if not ranges:
            raise InputError("invalid forward", "the excluded ranges cover every forwarded port", where=spec.where)
        for r in ranges:
            forwards.append(
                Forward(
                    proto=spec.proto,
                    address=spec.address or config.address,
                    dev=spec.dev or config.dev,
                    sources=spec.sources,
                    start=r.start,
                    end=r.end,
                    guest_port=r.to,
                    mac=nic.mac,
                    bridge=network.bridge,
                    guest=guest,
                    where=spec.where,
                )
            )
    plan = Plan(name=domain.name, uuid=domain.uuid, forwards=tuple(forwards))
    _check_own_conflicts(plan)
    limits.RULES.check(count_rules(plan.forwards), "the domain's forwards")
    return plan


def count_rules(forwards: Sequence[Forward]) -> int:
    """What the forwards render in the larger of the two backends (limits.RULES), counted as the
    templates write them: iptables, per forward and source network (or none), a DNAT and an
    ACCEPT, plus one mark rule per bridge; nftables, a map element per host port, and for a
    forward restricted to sources or a dev, a rule per source (each with a map element per
    port, where the guest ports are shifted)."""
    iptables = 2 * sum(max(1, len(f.sources)) for f in forwards) + len({f.bridge for f in forwards})
    nftables = 0
    for f in forwards:
        width = f.end - f.start + 1
        nftables += width
        if f.sources or f.dev:
            shifted = width if f.start != f.end and f.guest_port != f.start else 0
            nftables += max(1, len(f.sources)) * (1 + shifted)
    return max(iptables, nftables)


def effective_ranges(ranges: Iterable[PortRange]) -> list[PortRange]:
    """The forwarded ranges with the excluded ports cut out, each piece keeping its offset.

    The excluded ranges are merged and sorted once; each forwarded range then walks only the
    ones it overlaps (a domain's 256 ranges and 64 exclusions cost microseconds, not seconds).
    """
    ranges = list(ranges)
    cuts: list[list[int]] = []
    for ex in sorted((r for r in ranges if r.exclude), key=lambda r: r.start):
        if cuts and ex.start <= cuts[-1][1] + 1:
            cuts[-1][1] = max(cuts[-1][1], ex.end)
        else:
            cuts.append([ex.start, ex.end])
    starts = [start for start, _ in cuts]
    pieces: list[PortRange] = []
    for r in ranges:
        if r.exclude:
            continue
        position = r.start
        for start, end in cuts[max(0, bisect_right(starts, r.start) - 1) :]:
            if start > r.end:
                break
            if end < position:
                continue
            if start > position:
                pieces.append(PortRange(position, start - 1, r.to + position - r.start))
            position = end + 1
        if position <= r.end:
            pieces.append(PortRange(position, r.end, r.to + position - r.start))
    return pieces


Held = tuple[str, str, str, str | None, int, int]  # name, uuid, proto, address or None, start, end


class ClaimIndex:
    """Host ports claimed by domains, by protocol and port: a check costs what the plan claims,
    not what the host holds (1,000 domains hold 10,000 claims). Entries stay plain tuples, as
    the state index stores them: building objects for 10,000 claims would cost more than the
    check."""

    WIDE = 1024  # claims of more ports than this are kept in a list and compared one by one

    def __init__(self) -> None:
        self.ports: dict[tuple[str, int], list[Held]] = {}
        self.wide: list[Held] = []

    def add(self, name: str, uuid: str, proto: str, address: str | None, start: int, end: int) -> None:
        entry = (name, uuid, proto, address, start, end)
        if end - start >= self.WIDE:
            self.wide.append(entry)
            return
        for port in range(start, end + 1):
            self.ports.setdefault((proto, port), []).append(entry)

    def add_raw(self, name: str, uuid: str, raw: Iterable[list[Any]]) -> None:
        """Claims as the state index stores them: [proto, address or None, start, end]."""
        for proto, address, start, end in raw:
            self.add(name, uuid, proto, address, start, end)

    def add_plan(self, plan: Plan) -> None:
        for c in plan.claims:
            self.add(plan.name, plan.uuid, c.proto, str(c.address) if c.address else None, c.start, c.end)

    def holder(self, claim: Claim, uuid: str) -> Held | None:
        """Who else holds part of ``claim``, if anyone."""
        if claim.end - claim.start >= self.WIDE:
            candidates: Iterable[Held] = (e for es in self.ports.values() for e in es)
        else:
            candidates = (e for p in range(claim.start, claim.end + 1) for e in self.ports.get((claim.proto, p), ()))
        address = str(claim.address) if claim.address else None
        for entry in (*candidates, *self.wide):
            _, other_uuid, proto, other_address, start, end = entry
            if (
                other_uuid != uuid
                and proto == claim.proto
                and start <= claim.end
                and claim.start <= end
                and (address is None or other_address is None or address == other_address)
            ):
                return entry
        return None

    def check(self, plan: Plan) -> None:
        """Raise ConflictError if the plan claims what another domain holds."""
        for forward in plan.forwards:
            held = self.holder(forward.claim, plan.uuid)
            if held is not None:
                name, uuid, proto, address, start, end = held
                theirs = Claim(proto, IPv4Address(address) if address else None, start, end)
                raise ConflictError(
                    "host port conflict",
                    f"{forward.claim} is already forwarded to domain {name} ({uuid}, {theirs})",
                    where=forward.where,
                    domain=plan.name,
                )


def find_conflicts(plan: Plan, others: Iterable[tuple[str, str, Iterable[Claim]]]) -> None:
    """Raise ConflictError if the plan claims what another domain (name, uuid, claims) holds."""
    index = ClaimIndex()
    for name, uuid, claims in others:
        for c in claims:
            index.add(name, uuid, c.proto, str(c.address) if c.address else None, c.start, c.end)
    index.check(plan)


def check_listeners(
    plan: Plan, listeners: Sequence[Listener], config: Config, owner: Callable[[int], str | None] = lambda _: None
) -> None:
    """Raise ConflictError if a forward would capture a host process's listening socket
    (``listeners``, sorted as listeners.sort does) on a port ``host_ports.allow`` does not name.
    ``owner`` names the process holding a socket inode, if it can."""
    for forward in plan.forwards:
        taken = [s for s in captured(forward.claim, listeners) if not config.host_ports.allows(s.proto, s.port)]
        if taken:
            raise ConflictError(
                "host port in use", _in_use(forward, taken, config, owner), where=forward.where, domain=plan.name
            )


def _in_use(forward: Forward, taken: Sequence[Listener], config: Config, owner: Callable[[int], str | None]) -> str:
    """What is taken and the ways out, e.g. ``tcp *:53 would capture tcp 192.168.122.1:53, where
    dnsmasq (pid 812) listens: stop that process, give the forward an address other than
    192.168.122.1, or allow tcp/53 in host_ports.allow (<config>)``."""
    first = taken[0]
    ports = sorted({(s.proto, s.port) for s in taken}, key=lambda p: p[1])
    more = f" (and {len(ports) - 1} more port{'s' if len(ports) > 2 else ''} in use)" if len(ports) > 1 else ""
    fixes = ["stop that process"]
    if first.ipv4 is not None and not first.ipv4.is_unspecified:
        fixes.append(f"give the forward an address other than {first.ipv4}")
    claim = forward.claim
    allow = ", ".join(f"{p}/{n}" for p, n in ports) if len(ports) <= 3 else f"{claim.proto}/{claim.start}-{claim.end}"
    fixes.append(f"or allow {allow} in host_ports.allow ({config.path})")
    who = owner(first.inode) or "a host process"
    return f"{claim} would capture {first}{more}, where {who} listens: {', '.join(fixes)}"


def _check_own_conflicts(plan: Plan) -> None:
    """No two of the plan's forwards claim the same port: one sweep over the claims in port order
    (per protocol: the furthest end so far on each address, and on every address)."""
    claims = sorted((f.proto, f.start, f.end, i) for i, f in enumerate(plan.forwards))
    reach: dict[tuple[str, object], tuple[int, int]] = {}  # (proto, address or "*" or "any") -> (end, index)
    for proto, start, end, i in claims:
        address = plan.forwards[i].address
        # what this claim collides with: the same address or "every address", or anything at all
        keys = [(proto, "*"), (proto, "any")] if address is None else [(proto, address), (proto, "*")]
        for key in keys:
            held = reach.get(key)
            if held is not None and held[0] >= start:
                first, second = sorted((held[1], i))
                a, b = plan.forwards[first], plan.forwards[second]
                raise ConflictError(
                    "host port conflict",
                    f"{b.claim} is claimed twice ({a.where} and {b.where})",
                    where=b.where,
                    domain=plan.name,
                )
        for key in [(proto, "any"), (proto, "*" if address is None else address)]:
            if key not in reach or reach[key][0] < end:
                reach[key] = (end, i)


def _target(domain: Domain, spec: ForwardSpec, networks: dict[str, Network]) -> tuple[Interface, Network]:
    """The NIC a forward targets and the libvirt network it is on."""
    if spec.mac is not None:
        nics = [nic for nic in domain.interfaces if nic.mac == spec.mac]
        if not nics:
            raise InputError("invalid forward", f"the domain has no NIC with MAC {spec.mac}", where=f"{spec.where}.mac")
        network = _network_of(nics[0], networks)
        if network is None:
            raise InputError(
                "invalid forward",
                f"NIC {spec.mac} is not on an active libvirt NAT or routed network{_refused(domain, networks)}",
                where=f"{spec.where}.mac",
            )
        return nics[0], network
    for nic in domain.interfaces:
        network = _network_of(nic, networks)
        if network is not None and nic.mac is not None:
            return nic, network
    raise InputError(
        "invalid forward",
        "the domain has no NIC with a MAC on an active libvirt NAT or routed network" + _refused(domain, networks),
        where=spec.where,
    )


def _refused(domain: Domain, networks: dict[str, Network]) -> str:
    """Why the status of one of the domain's networks was not read, if it was not."""
    refused: dict[str, PortfwdError] = getattr(networks, "refused", {})
    for nic in domain.interfaces:
        if nic.network in refused:
            error = refused[nic.network]
            return f" (the status of network {nic.network} was refused: {error.what} ({error.where}): {error.why})"
    return ""


def _network_of(nic: Interface, networks: dict[str, Network]) -> Network | None:
    candidates: list[Network] = []
    if nic.type == "network" and nic.network in networks:
        candidates = [networks[nic.network]]
    elif nic.type == "bridge" and nic.bridge:
        candidates = [n for n in networks.values() if n.bridge == nic.bridge]
    for network in candidates:
        if network.forward_mode in ROUTABLE_MODES and network.bridge and network.subnets:
            return network
    return None


def _guest_address(spec: ForwardSpec, mac: str, network: Network, leases: LeaseLookup) -> IPv4Address | None:
    """Explicit address, then the MAC's current lease, then its static reservation; None while
    there is none. The lease comes before the reservation: a changed reservation counts once the
    guest holds the new address (its lease says so), and until then the guest is at its old one;
    a guest without any lease gets its reservation from dnsmasq, and nobody else can."""
    if spec.guest_address is not None:
        if not network.contains(spec.guest_address):
            subnets = ", ".join(str(n) for n in network.networks)
            raise InputError(
                "invalid forward",
                f"guest-address {spec.guest_address} is outside network {network.name} ({subnets})",
                where=f"{spec.where}.guest-address",
            )
        problem = _not_a_guest(spec.guest_address, network)
        if problem:
            raise InputError(
                "invalid forward",
                f"guest-address {spec.guest_address} is {problem}",
                where=f"{spec.where}.guest-address",
            )
        return spec.guest_address
    assert network.bridge is not None
    for address in (leases(network.bridge).get(mac), network.reservations.get(mac)):
        if address is not None and network.contains(address) and not _not_a_guest(address, network):
            return address
    return None


def _not_a_guest(address: IPv4Address, network: Network) -> str | None:
    """Why ``address`` cannot be a guest's on ``network`` (a forward there would reach the host's
    own services, or every guest), or None. A lease or reservation saying so is ignored."""
    for subnet in network.subnets:
        if address == subnet.ip:
            return f"the host's own address on network {network.name} ({network.bridge})"
        if subnet.network.prefixlen <= 30 and address == subnet.network.network_address:
            return f"the network address of network {network.name} ({subnet.network})"
        if subnet.network.prefixlen <= 30 and address == subnet.network.broadcast_address:
            return f"the broadcast address of network {network.name} ({subnet.network})"
    return None
