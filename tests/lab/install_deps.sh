#!/bin/bash
# Install what the end-to-end lab needs: libvirt, QEMU, dnsmasq and iptables for the
# lab host, a Debian kernel, busybox-static, cpio and a static C toolchain for the guest,
# and curl/socat for clients. Idempotent: when everything is installed it only checks
# dpkg and returns in well under a second.
#
# Package postinst scripts must not start daemons in the root network namespace: a
# policy-rc.d that exits 101 is put in place for the install (and removed afterwards if
# this script created it), and the autostart link of libvirt's "default" network is
# removed so that no libvirtd started outside the lab brings virbr0 up.
#
# Usage: tests/lab/install_deps.sh        (as root, Debian 12 or 13)
set -euo pipefail

readonly PACKAGES=(
    libvirt-daemon-system
    libvirt-clients
    libvirt-daemon
    libvirt-daemon-driver-qemu
    dnsmasq-base
    qemu-system-x86
    iptables
    nftables
    iproute2
    procps
    linux-image-amd64
    busybox-static
    cpio
    gcc
    libc6-dev
    xz-utils
    zstd
    curl
    socat
    python3
)
# Split out of libvirt-daemon on newer Debian releases; installed when the archive has it.
readonly OPTIONAL_PACKAGES=(libvirt-daemon-driver-network)
readonly POLICY_RC=/usr/sbin/policy-rc.d
readonly AUTOSTART_LINK=/etc/libvirt/qemu/networks/autostart/default.xml

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

has_candidate() {
    local candidate
    candidate=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [[ -n "$candidate" && "$candidate" != "(none)" ]]
}

remove_policy_rc() {
    rm -f "$POLICY_RC"
}

install_policy_rc() {
    if [[ -e "$POLICY_RC" ]]; then
        return 0
    fi
    printf '#!/bin/sh\n# installed by libvirt-portfwd tests/lab/install_deps.sh\nexit 101\n' \
        >"$POLICY_RC"
    chmod 0755 "$POLICY_RC"
    trap remove_policy_rc EXIT
}

wanted_packages() {
    local pkg
    printf '%s\n' "${PACKAGES[@]}"
    for pkg in "${OPTIONAL_PACKAGES[@]}"; do
        if has_candidate "$pkg"; then
            printf '%s\n' "$pkg"
        fi
    done
}

install_missing() {
    local -a wanted missing

    mapfile -t wanted < <(wanted_packages)
    mapfile -t missing < <(missing_packages "${wanted[@]}")
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "all packages already installed"
        return 0
    fi
    log "updating package lists"
    apt-get update -qq
    # Look again: optional packages are only known once the lists are fresh.
    mapfile -t wanted < <(wanted_packages)
    mapfile -t missing < <(missing_packages "${wanted[@]}")
    log "installing: ${missing[*]}"
    install_policy_rc
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

main() {
    if [[ $EUID -ne 0 ]]; then
        log "must run as root"
        return 1
    fi
    install_missing
    if [[ -e "$AUTOSTART_LINK" || -L "$AUTOSTART_LINK" ]]; then
        log "removing $AUTOSTART_LINK"
        rm -f "$AUTOSTART_LINK"
    fi
}

main "$@"
