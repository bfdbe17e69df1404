#!/bin/bash
# Install what the end-to-end lab needs: libvirt 11 (its nftables firewall backend), QEMU,
# dnsmasq and iptables/nftables for the lab host, a Debian kernel, busybox-static, cpio and a
# static C toolchain for the guest, and curl/socat for clients. Idempotent: when everything is
# installed it only checks dpkg and returns in well under a second.
#
# libvirt 11: Debian 13's own; on Debian 12 from bookworm-backports (a sources entry is added
# when none names that suite), with libvirt-dev at the same version so that libvirt-python
# builds against it.
#
# Package postinst scripts must not start daemons in the root network namespace: a
# policy-rc.d that exits 101 is put in place for the install (and removed afterwards if
# this script created it), and the autostart link of libvirt's "default" network is
# removed so that no libvirtd started outside the lab brings virbr0 up.
#
# Usage: tests/lab/install_deps.sh        (as root, Debian 12 or 13)
set -euo pipefail

readonly LIBVIRT_MIN=11
readonly LIBVIRT_PACKAGES=(
    libvirt-daemon-system
    libvirt-clients
    libvirt-daemon
    libvirt-daemon-driver-qemu
    libvirt-daemon-driver-network
    libvirt-dev
)
readonly BACKPORTS_SOURCES=/etc/apt/sources.list.d/bookworm-backports.sources
readonly PACKAGES=(
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

codename() {
    # shellcheck disable=SC1091
    (. /etc/os-release && printf '%s\n' "${VERSION_CODENAME:-}")
}

libvirt_is_current() {
    local version
    version=$(dpkg-query -W -f='${Version}' libvirt-daemon 2>/dev/null) || return 1
    dpkg --compare-versions "$version" ge "$LIBVIRT_MIN" || return 1
    [[ -z "$(missing_packages "${LIBVIRT_PACKAGES[@]}")" ]]
}

add_backports() {
    if grep -rqs --include='*.list' --include='*.sources' 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d; then
        return 0
    fi
    log "adding bookworm-backports ($BACKPORTS_SOURCES)"
    printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' \
        'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' >"$BACKPORTS_SOURCES"
}

install_libvirt() {
    if libvirt_is_current; then
        return 0
    fi
    local -a target=()
    if [[ "$(codename)" == bookworm ]]; then
        add_backports
        target=(-t bookworm-backports)
    fi
    log "installing libvirt >= $LIBVIRT_MIN${target[*]:+ from ${target[1]}}"
    apt-get update -qq
    install_policy_rc
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${target[@]}" \
        "${LIBVIRT_PACKAGES[@]}" >/dev/null
    libvirt_is_current || {
        log "libvirt is $(dpkg-query -W -f='${Version}' libvirt-daemon 2>/dev/null || echo missing), need >= $LIBVIRT_MIN"
        return 1
    }
}

install_missing() {
    local -a missing

    mapfile -t missing < <(missing_packages "${PACKAGES[@]}")
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "all packages already installed"
        return 0
    fi
    log "updating package lists"
    apt-get update -qq
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
    install_libvirt
    install_missing
    if [[ -e "$AUTOSTART_LINK" || -L "$AUTOSTART_LINK" ]]; then
        log "removing $AUTOSTART_LINK"
        rm -f "$AUTOSTART_LINK"
    fi
}

main "$@"
