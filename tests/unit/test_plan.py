"""Plans: policy on metadata, NIC and guest address selection, excluded ports, conflicts."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from libvirt_portfwd.config import Config
from libvirt_portfwd.domain import Domain
from libvirt_portfwd.errors import ConflictError, InputError
from libvirt_portfwd.forward import PortRange
from libvirt_portfwd.leases import load_leases
from libvirt_portfwd.network import Network
from libvirt_portfwd.plan import Claim, Plan, build_plan, collect_specs, effective_ranges, find_conflicts

from .helpers import MAC1, MAC2, UUID, UUID2, config, domain, forward, leases, network, networks, nic

GUEST = "192.168.122.50"
LEASED = leases({"virbr0": {MAC1: GUEST, MAC2: "192.168.122.51"}})


def plan_of(
    d: Domain,
    cfg: Config | None = None,
    nets: dict[str, Network] | None = None,
    lookup=LEASED,  # type: ignore[no-untyped-def]
) -> Plan:
    cfg = cfg or config()
    return build_plan(d, collect_specs(d, cfg), cfg, nets or networks(), lookup)


def error_of(exc_type: type[Exception], *args: object) -> str:
    with pytest.raises(exc_type) as caught:
        plan_of(*args)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("libvirt-portfwd: ") and "\n" not in message
    return message


def summary(plan: Plan) -> list[tuple[str, str | None, int, int, int, str, str | None]]:
    return [
        (
            f.proto,
            str(f.address) if f.address else None,
            f.start,
            f.end,
            f.guest_port,
            f.mac,
            str(f.guest) if f.guest else None,
        )
        for f in plan.forwards
    ]


# --- metadata policy (collect_specs) ------------------------------------------------------


def test_default_policy_allows_metadata_forwards() -> None:
    d = domain(forward({"proto": "tcp", "address": "203.0.113.10"}, {"start": 20443, "to": 443}))
    assert summary(plan_of(d)) == [("tcp", "203.0.113.10", 20443, 20443, 443, MAC1, GUEST)]


def test_metadata_disabled() -> None:
    d = domain(forward())
    cfg = config({"metadata": {"enabled": False}})
    with pytest.raises(InputError) as caught:
        collect_specs(d, cfg)
    assert str(caught.value) == (
        "libvirt-portfwd: forward refused (/etc/libvirt-portfwd/config.yaml: metadata.enabled): "
        "VM metadata may not declare forwards here"
    )


def test_metadata_disabled_still_allows_config_forwards() -> None:
    cfg = config({"metadata": {"enabled": False}, "domains": {"web1": [{"ranges": [{"start": 8080, "to": 80}]}]}})
    assert len(collect_specs(domain(), cfg)) == 1


def test_metadata_port_outside_policy() -> None:
    d = domain(forward({}, {"start": 2222, "to": 22}), forward({}, {"start": 80}))
    cfg = config({"metadata": {"ports": ["1024-65535"]}})
    with pytest.raises(InputError) as caught:
        collect_specs(d, cfg)
    assert str(caught.value) == (
        "libvirt-portfwd: forward refused (metadata portForward[1]): host port 80 is outside the ports metadata "
        "may claim (metadata.ports in /etc/libvirt-portfwd/config.yaml)"
    )


def test_metadata_range_partly_outside_policy() -> None:
    d = domain(forward({}, {"start": 1000, "end": 1100}))
    cfg = config({"metadata": {"ports": ["1024-65535"]}})
    with pytest.raises(InputError, match=r"host port 1000-1100 is outside the ports metadata may claim"):
        collect_specs(d, cfg)


def test_excluded_range_is_not_a_claim() -> None:
    d = domain(forward({}, {"start": 2000, "end": 2100}, {"start": 80, "exclude": "yes"}))
    assert len(collect_specs(d, config({"metadata": {"ports": ["1024-65535"]}}))) == 1


def test_policy_does_not_limit_config_forwards() -> None:
    cfg = config({"metadata": {"ports": ["1024-65535"]}, "domains": {"web1": [{"ranges": [{"start": 80}]}]}})
    assert summary(plan_of(domain(), cfg)) == [("tcp", None, 80, 80, 80, MAC1, GUEST)]


def test_metadata_guest_address_refused_by_default() -> None:
    d = domain(forward({"guest-address": "192.168.122.77"}))
    with pytest.raises(InputError) as caught:
        collect_specs(d, config())
    assert str(caught.value) == (
        "libvirt-portfwd: forward refused (metadata portForward[0].guest-address): metadata may not set "
        "guest-address (allow it with metadata.guest_address), got '192.168.122.77'"
    )


def test_metadata_guest_address_allowed() -> None:
    d = domain(forward({"guest-address": "192.168.122.77"}, {"start": 8080, "to": 80}))
    plan = plan_of(d, config({"metadata": {"guest_address": True}}), lookup=leases())
    assert summary(plan) == [("tcp", None, 8080, 8080, 80, MAC1, "192.168.122.77")]
    assert plan.waiting_macs == ()


def test_config_guest_address_needs_no_policy() -> None:
    cfg = config({"domains": {"web1": [{"guest-address": "192.168.122.78", "ranges": [{"start": 8080}]}]}})
    assert summary(plan_of(domain(), cfg))[0][-1] == "192.168.122.78"


def test_metadata_and_config_add_up() -> None:
    d = domain(forward({"proto": "tcp", "address": "203.0.113.10"}, {"start": 20443, "to": 443}))
    cfg = config(
        {
            "domains": {
                "web1": [{"proto": "udp", "ranges": [{"start": 20053, "to": 53}]}],
                UUID: [{"proto": "tcp", "ranges": [{"start": 20022, "to": 22}]}],
            }
        }
    )
    specs = collect_specs(d, cfg)
    assert [s.where for s in specs] == [
        f"/etc/libvirt-portfwd/config.yaml: domains.{UUID}[0]",
        "/etc/libvirt-portfwd/config.yaml: domains.web1[0]",
        "metadata portForward[0]",
    ]
    assert summary(plan_of(d, cfg)) == [
        ("tcp", None, 20022, 20022, 22, MAC1, GUEST),
        ("udp", None, 20053, 20053, 53, MAC1, GUEST),
        ("tcp", "203.0.113.10", 20443, 20443, 443, MAC1, GUEST),
    ]


def test_config_address_and_dev_are_defaults() -> None:
    d = domain(
        forward({}, {"start": 8080, "to": 80}), forward({"address": "203.0.113.11", "dev": "eth1"}, {"start": 9090})
    )
    plan = plan_of(d, config({"address": "203.0.113.10", "dev": "eth0"}))
    assert [(str(f.address), f.dev) for f in plan.forwards] == [("203.0.113.10", "eth0"), ("203.0.113.11", "eth1")]


def test_no_specs_no_forwards() -> None:
    plan = plan_of(domain())
    assert (plan.name, plan.uuid, plan.forwards, plan.waiting_macs) == ("web1", UUID, (), ())


# --- which NIC ----------------------------------------------------------------------------


def test_first_nic_on_an_active_nat_network() -> None:
    nics = [
        nic("52:54:00:00:00:01", network=None, type_="bridge", bridge="br0"),  # a host bridge
        nic("52:54:00:00:00:02", network="isolated"),
        nic("52:54:00:00:00:03", network="stopped"),  # not running: no status file
        nic(None, network="default"),
        nic("52:54:00:00:00:04", network="default", bridge="virbr0"),
        nic("52:54:00:00:00:05", network="default"),
    ]
    nets = networks(network(), network(name="isolated", bridge="virbr1", mode=None, ip="192.168.100.1"))
    lookup = leases({"virbr0": {"52:54:00:00:00:04": "192.168.122.4", "52:54:00:00:00:05": "192.168.122.5"}})
    plan = plan_of(domain(forward(), nics=nics), nets=nets, lookup=lookup)
    assert [(f.mac, f.bridge, str(f.guest)) for f in plan.forwards] == [
        ("52:54:00:00:00:04", "virbr0", "192.168.122.4")
    ]


@pytest.mark.parametrize("mode", ["nat", "route", "open"])
def test_routable_modes(mode: str) -> None:
    plan = plan_of(domain(forward()), nets=networks(network(mode=mode)))
    assert plan.forwards[0].bridge == "virbr0"


def test_bridge_nic_on_a_libvirt_bridge() -> None:
    """<interface type='bridge'><source bridge='virbr0'/> is on the network that owns virbr0."""
    nics = [nic(MAC1, network=None, type_="bridge", bridge="virbr0")]
    assert str(plan_of(domain(forward(), nics=nics)).forwards[0].guest) == GUEST


def test_second_network() -> None:
    nics = [nic(MAC1, network="isolated"), nic(MAC2, network="lab")]
    nets = networks(
        network(name="isolated", bridge="virbr1", mode=None, ip="192.168.100.1"),
        network(name="lab", bridge="virbr2", mode="route", ip="10.10.0.1"),
    )
    plan = plan_of(domain(forward(), nics=nics), nets=nets, lookup=leases({"virbr2": {MAC2: "10.10.0.20"}}))
    assert [(f.mac, f.bridge, str(f.guest)) for f in plan.forwards] == [(MAC2, "virbr2", "10.10.0.20")]


def test_mac_chooses_the_second_nic() -> None:
    nics = [nic(MAC1), nic(MAC2)]
    plan = plan_of(domain(forward({"mac": MAC2.upper()}), forward({}, {"start": 9090}), nics=nics))
    assert [(f.mac, str(f.guest)) for f in plan.forwards] == [(MAC2, "192.168.122.51"), (MAC1, GUEST)]


def test_mac_not_on_the_domain() -> None:
    message = error_of(InputError, domain(forward({"mac": "52:54:00:00:00:99"})))
    assert message == (
        "libvirt-portfwd: invalid forward (metadata portForward[0].mac): "
        "the domain has no NIC with MAC 52:54:00:00:00:99"
    )


def test_mac_on_a_nic_outside_libvirt_networks() -> None:
    nics = [nic(MAC1), nic(MAC2, network=None, type_="bridge", bridge="br0")]
    message = error_of(InputError, domain(forward({"mac": MAC2}), nics=nics))
    assert message == (
        "libvirt-portfwd: invalid forward (metadata portForward[0].mac): "
        f"NIC {MAC2} is not on an active libvirt NAT or routed network"
    )


@pytest.mark.parametrize(
    ("nics", "nets"),
    [
        ([nic(MAC1, network=None, type_="bridge", bridge="br0")], None),
        ([nic(MAC1, network="default")], {}),  # the network is not running
        ([nic(MAC1, network="default")], networks(network(mode=None))),  # isolated
        ([nic(MAC1, network="default")], networks(network(mode="bridge", bridge="br0"))),
        ([nic(None, network="default")], None),
        ([], None),
    ],
    ids=["host-bridge", "network-inactive", "isolated", "bridge-mode", "no-mac", "no-nic"],
)
def test_no_nic_on_a_nat_network(nics: list[str], nets: dict[str, Network] | None) -> None:
    d = domain(forward(), nics=nics)
    cfg = config()
    with pytest.raises(InputError) as caught:
        build_plan(d, collect_specs(d, cfg), cfg, networks() if nets is None else nets, LEASED)
    assert str(caught.value) == (
        "libvirt-portfwd: invalid forward (metadata portForward[0]): "
        "the domain has no NIC with a MAC on an active libvirt NAT or routed network"
    )


def test_ipv6_only_network_is_not_a_target() -> None:
    v6 = Network(name="default", bridge="virbr0", forward_mode="nat", subnets=())
    with pytest.raises(InputError, match="no NIC with a MAC on an active libvirt NAT or routed network"):
        plan_of(domain(forward()), nets={"default": v6})


# --- which guest address ------------------------------------------------------------------

ALLOW_GUEST = {"metadata": {"guest_address": True}}


def test_explicit_guest_address_inside_the_subnet() -> None:
    d = domain(forward({"guest-address": "192.168.122.200"}))
    assert str(plan_of(d, config(ALLOW_GUEST)).forwards[0].guest) == "192.168.122.200"


def test_explicit_guest_address_outside_the_subnet() -> None:
    message = error_of(InputError, domain(forward({"guest-address": "10.0.0.5"})), config(ALLOW_GUEST))
    assert message == (
        "libvirt-portfwd: invalid forward (metadata portForward[0].guest-address): "
        "guest-address 10.0.0.5 is outside network default (192.168.122.0/24)"
    )


def test_explicit_guest_address_on_a_second_subnet() -> None:
    n = network()
    two = Network(n.name, n.bridge, n.forward_mode, (*n.subnets, *network(ip="192.168.123.1").subnets))
    d = domain(forward({"guest-address": "192.168.123.9"}))
    assert str(plan_of(d, config(ALLOW_GUEST), nets={"default": two}).forwards[0].guest) == "192.168.123.9"
    with pytest.raises(InputError, match=r"outside network default \(192.168.122.0/24, 192.168.123.0/24\)"):
        plan_of(domain(forward({"guest-address": "192.168.124.9"})), config(ALLOW_GUEST), {"default": two})


def test_the_current_lease_before_a_reservation() -> None:
    """A reservation changed while the guest holds its old lease counts once the guest renews."""
    nets = networks(network(hosts={MAC1: "192.168.122.10"}))
    assert str(plan_of(domain(forward()), nets=nets).forwards[0].guest) == "192.168.122.50"  # the default lease


def test_an_address_dnsmasq_gave_to_another_mac_is_not_this_macs() -> None:
    from libvirt_portfwd.leases import current_leases

    old, new = (
        ("52:54:00:00:00:01", IPv4Address("192.168.122.178"), 1000),
        ("52:54:00:00:00:02", IPv4Address("192.168.122.178"), 2000),
    )
    assert current_leases([old, new], now=500) == {new[0]: new}


def test_reservation_without_lease() -> None:
    nets = networks(network(hosts={MAC1: "192.168.122.10"}))
    plan = plan_of(domain(forward()), nets=nets, lookup=leases())
    assert str(plan.forwards[0].guest) == "192.168.122.10" and plan.waiting_macs == ()


def test_explicit_address_before_reservation() -> None:
    nets = networks(network(hosts={MAC1: "192.168.122.10"}))
    d = domain(forward({"guest-address": "192.168.122.20"}))
    assert str(plan_of(d, config(ALLOW_GUEST), nets).forwards[0].guest) == "192.168.122.20"


def test_lease_of_another_bridge_is_not_used() -> None:
    plan = plan_of(domain(forward()), lookup=leases({"virbr1": {MAC1: "192.168.122.50"}}))
    assert plan.forwards[0].guest is None
    assert plan.waiting_macs == (MAC1,)


def test_lease_outside_the_subnet_is_ignored() -> None:
    plan = plan_of(domain(forward()), lookup=leases({"virbr0": {MAC1: "10.1.2.3"}}))
    assert plan.forwards[0].guest is None and plan.waiting_macs == (MAC1,)


def test_expired_lease_means_waiting(tmp_path: Path) -> None:
    status = tmp_path / "virbr0.status"
    status.write_text(
        json.dumps(
            [
                {"ip-address": "192.168.122.50", "mac-address": MAC1, "expiry-time": 1_700_000_000},
                {"ip-address": "192.168.122.51", "mac-address": MAC2, "expiry-time": 1_700_000_100},
            ]
        )
    )

    def lookup_at(now: float):  # type: ignore[no-untyped-def]
        return lambda bridge: load_leases(str(tmp_path / f"{bridge}.status"), now=now)

    d = domain(forward(), forward({"mac": MAC2}, {"start": 9090}), nics=[nic(MAC1), nic(MAC2)])
    before = plan_of(d, lookup=lookup_at(1_699_999_900))
    assert [str(f.guest) for f in before.forwards] == ["192.168.122.50", "192.168.122.51"]
    between = plan_of(d, lookup=lookup_at(1_700_000_050))
    assert [f.guest for f in between.forwards] == [None, IPv4Address("192.168.122.51")]
    assert between.waiting_macs == (MAC1,)
    after = plan_of(d, lookup=lookup_at(1_800_000_000))
    assert after.waiting_macs == (MAC1, MAC2)


# --- excluded ports ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ranges", "expected"),
    [
        ([PortRange(80, 80, 8080)], [PortRange(80, 80, 8080)]),
        # libvirt's own passt example: 1000-1050 without 1020 and 1030-1040
        (
            [PortRange(1000, 1050, 1000), PortRange(1020, 1020, 1020, True), PortRange(1030, 1040, 1030, True)],
            [PortRange(1000, 1019, 1000), PortRange(1021, 1029, 1021), PortRange(1041, 1050, 1041)],
        ),
        # shifted: each piece keeps its offset (host 1000 -> guest 2000, so 1021 -> 2021)
        (
            [PortRange(1000, 1050, 2000), PortRange(1020, 1020, 1020, True), PortRange(1030, 1040, 1030, True)],
            [PortRange(1000, 1019, 2000), PortRange(1021, 1029, 2021), PortRange(1041, 1050, 2041)],
        ),
        # the exclude first, at the ends, and beyond the range
        (
            [PortRange(5010, 5015, 5010, True), PortRange(5000, 5020, 6000)],
            [PortRange(5000, 5009, 6000), PortRange(5016, 5020, 6016)],
        ),
        ([PortRange(100, 110, 200), PortRange(100, 100, 100, True)], [PortRange(101, 110, 201)]),
        ([PortRange(100, 110, 200), PortRange(110, 120, 110, True)], [PortRange(100, 109, 200)]),
        ([PortRange(100, 110, 200), PortRange(300, 400, 300, True)], [PortRange(100, 110, 200)]),
        # one exclude cuts every forwarded range it touches
        (
            [PortRange(100, 110, 100), PortRange(105, 120, 305), PortRange(108, 108, 108, True)],
            [PortRange(100, 107, 100), PortRange(109, 110, 109), PortRange(105, 107, 305), PortRange(109, 120, 309)],
        ),
        # everything excluded: nothing left
        ([PortRange(100, 110, 200), PortRange(90, 120, 90, True)], []),
    ],
    ids=["plain", "passt-example", "shifted", "exclude-first", "cut-start", "cut-end", "disjoint", "two-ranges", "all"],
)
def test_effective_ranges(ranges: list[PortRange], expected: list[PortRange]) -> None:
    assert effective_ranges(ranges) == expected


def test_exclude_in_a_plan() -> None:
    d = domain(
        forward(
            {"proto": "udp"}, {"start": 5000, "end": 5020, "to": 6000}, {"start": 5010, "end": 5015, "exclude": "yes"}
        )
    )
    assert [(f.start, f.end, f.guest_port, f.guest_end) for f in plan_of(d).forwards] == [
        (5000, 5009, 6000, 6009),
        (5016, 5020, 6016, 6020),
    ]


# --- conflicts -----------------------------------------------------------------------------

A = IPv4Address("203.0.113.10")
B = IPv4Address("203.0.113.11")


@pytest.mark.parametrize(
    ("first", "second", "collide"),
    [
        (Claim("tcp", A, 80, 80), Claim("tcp", A, 80, 80), True),
        (Claim("tcp", A, 80, 90), Claim("tcp", A, 90, 100), True),
        (Claim("tcp", A, 80, 89), Claim("tcp", A, 90, 100), False),
        (Claim("tcp", A, 80, 80), Claim("udp", A, 80, 80), False),
        (Claim("tcp", A, 80, 80), Claim("sctp", A, 80, 80), False),
        (Claim("tcp", A, 80, 80), Claim("tcp", B, 80, 80), False),
        (Claim("tcp", None, 80, 80), Claim("tcp", B, 80, 80), True),
        (Claim("tcp", A, 80, 80), Claim("tcp", None, 1, 65535), True),
        (Claim("udp", None, 53, 53), Claim("udp", None, 53, 53), True),
        (Claim("udp", None, 53, 53), Claim("tcp", None, 53, 53), False),
    ],
)
def test_claims(first: Claim, second: Claim, collide: bool) -> None:
    assert first.collides(second) is collide
    assert second.collides(first) is collide


def test_claim_text() -> None:
    assert str(Claim("tcp", A, 80, 80)) == "tcp 203.0.113.10:80"
    assert str(Claim("udp", None, 5000, 5010)) == "udp *:5000-5010"


def test_conflict_within_a_domain() -> None:
    d = domain(
        forward({"address": "203.0.113.10"}, {"start": 8080, "to": 80}), forward({}, {"start": 8000, "end": 8090})
    )
    assert error_of(ConflictError, d) == (
        "libvirt-portfwd: web1: host port conflict (metadata portForward[1]): tcp *:8000-8090 is claimed twice "
        "(metadata portForward[0] and metadata portForward[1])"
    )


def test_conflict_between_config_and_metadata() -> None:
    d = domain(forward({}, {"start": 8080, "to": 80}))
    cfg = config({"domains": {"web1": [{"ranges": [{"start": 8080, "to": 8080}]}]}})
    assert (
        "tcp *:8080 is claimed twice (/etc/libvirt-portfwd/config.yaml: domains.web1[0] and metadata portForward[0])"
        in error_of(ConflictError, d, cfg)
    )


def test_no_conflict_between_protocols_or_addresses() -> None:
    d = domain(
        forward({"proto": "tcp", "address": "203.0.113.10"}, {"start": 53}),
        forward({"proto": "udp", "address": "203.0.113.10"}, {"start": 53}),
        forward({"proto": "sctp"}, {"start": 53}),
        forward({"proto": "tcp", "address": "203.0.113.11"}, {"start": 53}),
    )
    assert len(plan_of(d).forwards) == 4


def test_excluded_ports_can_be_forwarded_elsewhere() -> None:
    d = domain(
        forward({}, {"start": 1000, "end": 1100}, {"start": 1050, "exclude": "yes"}),
        forward({}, {"start": 1050, "to": 22}),
    )
    assert [(f.start, f.end) for f in plan_of(d).forwards] == [(1000, 1049), (1051, 1100), (1050, 1050)]


def test_conflict_with_another_domain() -> None:
    plan = plan_of(domain(forward({"address": "203.0.113.10"}, {"start": 8080, "to": 80})))
    others = [("web2", UUID2, [Claim("udp", None, 8080, 8080), Claim("tcp", None, 8000, 8100)])]
    with pytest.raises(ConflictError) as caught:
        find_conflicts(plan, others)
    assert str(caught.value) == (
        "libvirt-portfwd: web1: host port conflict (metadata portForward[0]): tcp 203.0.113.10:8080 is already "
        f"forwarded to domain web2 ({UUID2}, tcp *:8000-8100)"
    )


def test_no_conflict_with_another_domain() -> None:
    plan = plan_of(domain(forward({"address": "203.0.113.10"}, {"start": 8080, "to": 80})))
    find_conflicts(
        plan,
        [
            ("web2", UUID2, [Claim("udp", None, 8080, 8080), Claim("tcp", B, 8080, 8080), Claim("tcp", A, 8081, 9000)]),
            ("web3", "1b7e0f7c-2d3a-4c5b-8e6f-7a8b9c0d1e2f", []),
        ],
    )


def test_own_previous_claims_are_not_a_conflict() -> None:
    """Applying again (reconnect, sync) meets the domain's own recorded claims."""
    plan = plan_of(domain(forward({}, {"start": 8080, "to": 80})))
    find_conflicts(plan, [("web1-old-name", UUID, plan.claims)])


def test_waiting_macs_are_sorted_and_unique() -> None:
    d = domain(
        forward({"mac": MAC2}),
        forward({}, {"start": 9090}),
        forward({"mac": MAC2}, {"start": 9091}),
        nics=[nic(MAC1), nic(MAC2)],
    )
    assert plan_of(d, lookup=leases()).waiting_macs == (MAC1, MAC2)
