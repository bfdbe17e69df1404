"""Which end-to-end scenario runs on which stock host, so that the suite stays under 30 minutes.

Every scenario runs at least once in each box (Debian 12, Debian 13), and each box under each of
its libvirt firewall backends: Debian 12 (iptables only) runs every scenario of issue 12; Debian
13 runs the guide's case under both backends and shares the others between them, each where it
says the most (libvirt's SIGHUP and firewalld-style reloads, the network re-created, late
leases, the second NIC under nftables, where our gate in libvirt's table is at stake; restarts,
flushes, conflicts, stops and the journal under iptables, Debian's default). The scenarios of
following the guest (issue 14) run in one box. The lab's own smoke tests run on Debian 12 (its
iptables) and on Debian 13 under nftables. The neighbours of issue 15 (test_neighbours.py, each
on the hosts where it works today, its ``WORKS``) run once per libvirt firewall backend: under
iptables in Debian 12 (Docker 20.10, firewalld 1.3, ufw 0.36), under nftables in Debian 13
(firewalld 2.3, the admin's nftables), so each box has its share. ``--full`` runs everything
everywhere.
"""

ALL = ("debian12-iptables", "debian13-iptables", "debian13-nftables")
DEBIAN13_IPTABLES = ("debian12-iptables", "debian13-iptables")
DEBIAN13_NFTABLES = ("debian12-iptables", "debian13-nftables")

HOSTS = {  # test function -> the hosts it runs on (absent: every host)
    "test_sync_restores_rules_an_admin_flushed": DEBIAN13_IPTABLES,
    "test_libvirtd_restart_reconnects": DEBIAN13_IPTABLES,
    "test_second_vm_claiming_a_held_port": DEBIAN13_IPTABLES,
    "test_shutdown_and_destroy_remove_every_rule": DEBIAN13_IPTABLES,
    "test_two_vms_started_at_once": DEBIAN13_IPTABLES,
    "test_changes_are_in_the_journal": DEBIAN13_IPTABLES,
    "test_libvirtd_sighup_keeps_forwards": DEBIAN13_NFTABLES,
    "test_firewall_reload_puts_libvirts_rules_on_top": DEBIAN13_NFTABLES,
    "test_network_recreated_then_vm_restarted": DEBIAN13_NFTABLES,
    "test_fresh_vm_gets_its_forward_when_the_lease_appears": DEBIAN13_NFTABLES,
    "test_config_forward_to_the_second_nic": DEBIAN13_NFTABLES,
    "test_the_forward_follows_the_guest_when_its_reservation_changes": ("debian13-nftables",),
    "test_a_pending_removal_is_completed_by_the_watcher_unit": ("debian13-nftables",),
    # issue 15: each neighbour once per libvirt firewall backend, iptables on Debian 12, nftables
    # on Debian 13 (debian13-iptables: --full)
    "test_beside_docker": ("debian12-iptables", "debian13-nftables"),
    "test_beside_ufw": ("debian12-iptables", "debian13-nftables"),
    "test_beside_firewalld": ("debian12-iptables", "debian13-nftables"),
    "test_beside_firewalld_strict": ("debian13-nftables",),  # Debian 13 only (firewalld 2.3)
    "test_beside_admins_nftables": ("debian12-iptables", "debian13-nftables"),
}
SMOKE_HOSTS = ("debian12-iptables", "debian13-nftables")


def runs_on(module: str, test: str, host: str) -> bool:
    """Whether ``test`` of ``module`` (its file name) runs on ``host`` (a test id) by default."""
    if module == "test_lab_smoke.py":
        return host in SMOKE_HOSTS
    return host in HOSTS.get(test, ALL)
