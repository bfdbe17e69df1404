#!/bin/bash
# Install the tools the end-to-end lab needs on the machine, and nothing else: mmdebstrap (it
# builds the lab's Debian root file systems, tests/lab/rootfs.py, which hold libvirt, QEMU,
# dnsmasq, the guest's kernel and busybox), systemd-container (systemd-nspawn, to boot those
# roots), iproute2 (the lab's namespaces and veths), iptables and nftables (reading the root
# namespace's rules, which the tests compare before and after). libvirt and QEMU are never
# installed on the machine, no apt source is added, and no installed package changes version.
# Idempotent: when everything is installed it only asks dpkg and returns in well under a second.
#
# Usage: tests/lab/install_deps.sh        (as root, Debian 12 or 13)
set -euo pipefail

readonly PACKAGES=(
    mmdebstrap
    systemd-container
    iproute2
    iptables
    nftables
    python3
)

log() {
    printf 'install_deps: %s\n' "$*" >&2
}

missing_packages() {
    # One dpkg-query for all: prints "name status" for the packages dpkg knows.
    local -A installed=()
    local name status pkg
    while read -r name status; do
        if [[ "$status" == installed ]]; then
            installed[${name%%:*}]=1
        fi
    done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null || true)
    for pkg in "$@"; do
        [[ -n "${installed[$pkg]:-}" ]] || printf '%s\n' "$pkg"
    done
}

main() {
    local -a missing
    if [[ $EUID -ne 0 ]]; then
        log "must run as root"
        return 1
    fi
    mapfile -t missing < <(missing_packages "${PACKAGES[@]}")
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    log "updating package lists"
    apt-get update -qq
    log "installing: ${missing[*]}"
    # Tools only; none of them starts a daemon. --no-upgrade: a package already there keeps its version.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-upgrade \
        "${missing[@]}" >/dev/null
}

main "$@"
