#!/usr/bin/env bash
# libvirt-portfwd installer for Debian 12/13 libvirt hosts. Run as root:
#   ./install.sh               install or upgrade (idempotent)
#   ./install.sh --uninstall   remove everything it added, live rules included
# Installs: Debian packages it needs, the package in its own venv (from Debian's /usr/bin/python3),
# the libvirt hooks (qemu.d, network.d; never overwriting a hook it did not write), a commented
# default config if none exists, the CLI, the watcher and boot-time sync services where systemd
# runs, and persistent net.ipv4.ip_forward=1 (sysctl.d, applied).
set -euo pipefail

PREFIX=${LIBVIRT_PORTFWD_PREFIX:-/opt/libvirt-portfwd}
HOOK_DIR=${LIBVIRT_HOOKS_DIR:-/etc/libvirt/hooks}
CONFIG=${LIBVIRT_PORTFWD_CONFIG:-/etc/libvirt-portfwd/config.yaml}
RUN_DIR=/run/libvirt-portfwd
HOOK=$HOOK_DIR/qemu.d/libvirt-portfwd
NETWORK_HOOK=$HOOK_DIR/network.d/libvirt-portfwd
UNIT_DIR=/etc/systemd/system
UNITS=(libvirt-portfwd-watch.service libvirt-portfwd-sync.service)
SYSCTL_FILE=/etc/sysctl.d/60-libvirt-portfwd.conf
CLI_LINK=/usr/local/sbin/libvirt-portfwd
MARKER="managed-by: libvirt-portfwd"
PACKAGES=(python3-venv python3-dev gcc pkg-config libvirt-dev iptables nftables procps)
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf 'libvirt-portfwd: %s\n' "$*"; }
die() { printf 'libvirt-portfwd: install: %s\n' "$*" >&2; exit 1; }

ours() { [ -f "$1" ] && grep -q "$MARKER" "$1"; }

install_packages() {
    local missing=()
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        # libvirt-dev must match the libvirt installed (e.g. libvirt 11 from bookworm-backports)
        local libvirt
        if libvirt=$(dpkg-query -W -f='${Version}' libvirt0 2>/dev/null) && [ -n "$libvirt" ]; then
            missing=("${missing[@]/#libvirt-dev/libvirt-dev=$libvirt}")
        fi
        say "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

install_venv() {
    if [ ! -x "$PREFIX/venv/bin/python3" ]; then
        say "creating $PREFIX/venv from /usr/bin/python3"
        /usr/bin/python3 -m venv "$PREFIX/venv"
    fi
    local pip=("$PREFIX/venv/bin/pip" --disable-pip-version-check -q)
    "${pip[@]}" install "$SRC"  # dependencies (lxml, jinja2, pyyaml, libvirt-python)
    "${pip[@]}" install --no-deps --force-reinstall "$SRC"  # this checkout's code, always
}

install_hook() {
    local target
    for target in "$HOOK" "$NETWORK_HOOK"; do
        if [ -e "$target" ] && ! ours "$target"; then
            die "$target exists and was not written by libvirt-portfwd; not overwriting it"
        fi
    done
    local had_hooks=no
    if [ -n "$(find "$HOOK_DIR" -maxdepth 2 -type f -perm -u+x 2>/dev/null | head -n 1)" ]; then
        had_hooks=yes
    fi
    write_hook qemu "$HOOK"
    write_hook network "$NETWORK_HOOK"
    if [ "$had_hooks" = no ]; then
        say "libvirtd had no hooks before: make it pick these up with"
        say "  systemctl restart libvirtd   (or: kill -HUP \$(pidof libvirtd) where systemd does not run)"
    fi
}

write_hook() {  # write_hook qemu|network TARGET: the hook with our interpreter and config path
    local tmp
    mkdir -p "$(dirname "$2")"
    tmp=$(mktemp "$(dirname "$2")/.libvirt-portfwd.XXXXXX")
    sed -e "1s|.*|#!$PREFIX/venv/bin/python3 -I|" \
        -e "s|^CONFIG = None$|CONFIG = '$CONFIG'|" "$SRC/hooks/$1" >"$tmp"
    chmod 0755 "$tmp"
    mv -f "$tmp" "$2"
    say "hook installed: $2"
}

install_units() {
    if [ ! -d /run/systemd/system ]; then
        say "no systemd here: run 'libvirt-portfwd watch' under your init, and 'libvirt-portfwd sync' at boot"
        return
    fi
    local unit
    for unit in "${UNITS[@]}"; do
        sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@CONFIG@|$CONFIG|g" "$SRC/systemd/$unit" >"$UNIT_DIR/$unit"
    done
    systemctl daemon-reload
    systemctl enable --quiet "${UNITS[@]}"
    systemctl restart libvirt-portfwd-watch.service
    say "services enabled: ${UNITS[*]}"
}

install_config() {
    if [ ! -e "$CONFIG" ]; then
        mkdir -p "$(dirname "$CONFIG")"
        install -m 0644 "$SRC/templates/config.yaml" "$CONFIG"
        say "default config written: $CONFIG (all comments: the defaults)"
    fi
}

install_sysctl() {
    printf '# libvirt-portfwd: forwarded connections are routed to the guests\nnet.ipv4.ip_forward = 1\n' >"$SYSCTL_FILE"
    sysctl -q -w net.ipv4.ip_forward=1
}

check_libvirt() {
    if ! command -v libvirtd >/dev/null 2>&1 && ! command -v virtqemud >/dev/null 2>&1; then
        say "libvirt is not installed here: the hook is in place and works once it is"
    fi
}

install_all() {
    install_packages
    install_venv
    ln -sfn "$PREFIX/venv/bin/libvirt-portfwd" "$CLI_LINK"
    install_config
    install_hook
    install_units
    install_sysctl
    check_libvirt
    say "installed; try: libvirt-portfwd plan <domain.xml>, libvirt-portfwd status"
}

uninstall_all() {
    local unit target
    if [ -d /run/systemd/system ]; then
        for unit in "${UNITS[@]}"; do
            if ours "$UNIT_DIR/$unit"; then
                systemctl disable --now --quiet "$unit" || true
                rm -f "$UNIT_DIR/$unit"
            fi
        done
        systemctl daemon-reload
    fi
    if [ -x "$PREFIX/venv/bin/libvirt-portfwd" ]; then
        "$PREFIX/venv/bin/libvirt-portfwd" --config "$CONFIG" remove --all || say "could not remove the live rules (see above)"
    fi
    for target in "$HOOK" "$NETWORK_HOOK"; do
        if ours "$target"; then rm -f "$target"; say "hook removed: $target"; fi
    done
    rmdir "$HOOK_DIR/qemu.d" "$HOOK_DIR/network.d" "$HOOK_DIR" 2>/dev/null || true
    if [ -L "$CLI_LINK" ]; then rm -f "$CLI_LINK"; fi
    if [ -f "$CONFIG" ] && cmp -s "$CONFIG" "$SRC/templates/config.yaml"; then
        rm -f "$CONFIG"
        rmdir "$(dirname "$CONFIG")" 2>/dev/null || true
    elif [ -f "$CONFIG" ]; then
        say "kept your edited config: $CONFIG"
    fi
    rm -f "$SYSCTL_FILE"
    rm -rf "$PREFIX" "$RUN_DIR"
    say "uninstalled (net.ipv4.ip_forward stays as it is now; libvirt's NAT networks need it)"
}

[ "$(id -u)" -eq 0 ] || die "run as root"
case "${1:-}" in
    "") install_all ;;
    --uninstall) uninstall_all ;;
    *) die "usage: $0 [--uninstall]" ;;
esac
