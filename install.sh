#!/usr/bin/env bash
# libvirt-portfwd installer for Debian 12/13 libvirt hosts. Run as root:
#   ./install.sh               install, upgrade or repair (idempotent; run it again after a
#                              distribution upgrade or whenever a hook says so)
#   ./install.sh --uninstall   remove everything it added, live rules included
#   ./install.sh --stage       only the release, the default config, the hooks and the CLI, into
#                              the four places the environment must name (LIBVIRT_PORTFWD_PREFIX,
#                              LIBVIRT_PORTFWD_CONFIG, LIBVIRT_HOOKS_DIR, LIBVIRT_PORTFWD_CLI):
#                              no packages, services or sysctl (bench/ measures what this builds)
# Installs: the Debian packages it needs (Debian's own python3 and its python3-lxml, -jinja2,
# -yaml and -libvirt, so that a distribution upgrade brings the dependencies along), this
# checkout's code as a new release under /opt/libvirt-portfwd/releases, checked, then switched
# to in one rename of the `current` link; the libvirt hooks (POSIX sh shims that cannot fail
# where libvirt would stop a VM; never overwriting a hook it did not write), a commented default
# config if none exists, the CLI, the resident service and boot-time sync where systemd runs,
# and persistent net.ipv4.ip_forward=1 (sysctl.d, applied).
set -euo pipefail

PYTHON=/usr/bin/python3
PREFIX=${LIBVIRT_PORTFWD_PREFIX:-/opt/libvirt-portfwd}
RELEASES=$PREFIX/releases
CURRENT=$PREFIX/current
HOOK_DIR=${LIBVIRT_HOOKS_DIR:-/etc/libvirt/hooks}
CONFIG=${LIBVIRT_PORTFWD_CONFIG:-/etc/libvirt-portfwd/config.yaml}
RUN_DIR=/run/libvirt-portfwd
HOOK=$HOOK_DIR/qemu.d/libvirt-portfwd
NETWORK_HOOK=$HOOK_DIR/network.d/libvirt-portfwd
UNIT_DIR=/etc/systemd/system
UNITS=(libvirt-portfwd.service libvirt-portfwd-sync.service)
OLD_UNITS=(libvirt-portfwd-watch.service)  # the service's name before issue 14: replaced on upgrade
SYSCTL_FILE=/etc/sysctl.d/60-libvirt-portfwd.conf
CLI=${LIBVIRT_PORTFWD_CLI:-/usr/local/sbin/libvirt-portfwd}
MARKER="managed-by: libvirt-portfwd"
PACKAGES=(python3 python3-lxml python3-jinja2 python3-yaml python3-libvirt iptables nftables procps conntrack)
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf 'libvirt-portfwd: %s\n' "$*"; }
die() { printf 'libvirt-portfwd: install: %s\n' "$*" >&2; exit 1; }

ours() { [ -f "$1" ] && grep -q "$MARKER" "$1"; }

boot() { "$PYTHON" -I -S "$CURRENT/hooks/boot.py" "$@"; }

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# A new release beside the old one, compiled and checked by the interpreter it will run under,
# then switched to by renaming one link: a hook running meanwhile sees the old release or the
# new one, never half of either. The previous release is kept for the hooks still running it.
install_release() {
    local id new previous dir
    id=$(date -u +%Y%m%dT%H%M%S)-$$
    new=$RELEASES/$id
    mkdir -p "$RELEASES"
    rm -rf "$RELEASES"/*.partial
    mkdir "$new.partial"
    (cd "$SRC" && cp -R --parents hooks/boot.py hooks/shim.sh templates libvirt_portfwd "$new.partial/")
    find "$new.partial" -name __pycache__ -prune -exec rm -rf {} +
    "$PYTHON" -I -S -m compileall -q "$new.partial/libvirt_portfwd" >/dev/null || :  # the check says why
    if ! "$PYTHON" -I -S "$new.partial/hooks/boot.py" check; then
        rm -rf "$new.partial"
        die "the new release does not run here (see above); the installed one is unchanged"
    fi
    mv "$new.partial" "$new"
    previous=$(readlink "$CURRENT" 2>/dev/null || true)
    ln -sfn "releases/$id" "$PREFIX/.current.new"
    mv -T "$PREFIX/.current.new" "$CURRENT"
    for dir in "$RELEASES"/*; do
        case "releases/${dir##*/}" in "releases/$id" | "$previous") ;; *) rm -rf "$dir" ;; esac
    done
    say "release installed: $new (Python $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])'))"
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
    write_file "$HOOK" 0755 boot shim qemu "$CONFIG" "$CURRENT"
    write_file "$NETWORK_HOOK" 0755 boot shim network "$CONFIG" "$CURRENT"
    say "hooks installed: $HOOK, $NETWORK_HOOK"
    if [ "$had_hooks" = no ]; then
        say "libvirtd had no hooks before: make it pick these up with"
        say "  systemctl restart libvirtd   (or: kill -HUP \$(pidof libvirtd) where systemd does not run)"
    fi
}

write_file() {  # write_file TARGET MODE COMMAND...: COMMAND's output, renamed into place
    local target=$1 mode=$2 tmp
    shift 2
    mkdir -p "$(dirname "$target")"
    tmp=$(mktemp "$(dirname "$target")/.libvirt-portfwd.XXXXXX")
    if ! "$@" >"$tmp"; then rm -f "$tmp"; die "could not write $target"; fi
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$target"
}

cli_launcher() {
    printf '#!/bin/sh\n# %s (install.sh writes this file)\nexec %s -I -S %s cli --config %s "$@"\n' \
        "$MARKER" "$PYTHON" "$CURRENT/hooks/boot.py" "$CONFIG"
}

install_cli() {
    if [ -e "$CLI" ] && [ ! -L "$CLI" ] && ! ours "$CLI"; then
        die "$CLI exists and was not written by libvirt-portfwd; not overwriting it"
    fi
    rm -f "$CLI.new"
    write_file "$CLI" 0755 cli_launcher
}

install_units() {
    if [ ! -d /run/systemd/system ]; then
        say "no systemd here: run 'libvirt-portfwd serve' under your init, and 'libvirt-portfwd sync' at boot"
        return
    fi
    local unit
    for unit in "${OLD_UNITS[@]}"; do
        if ours "$UNIT_DIR/$unit"; then
            systemctl disable --now --quiet "$unit" || true
            rm -f "$UNIT_DIR/$unit"
        fi
    done
    for unit in "${UNITS[@]}"; do
        write_file "$UNIT_DIR/$unit" 0644 sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@CONFIG@|$CONFIG|g" "$SRC/systemd/$unit"
    done
    systemctl daemon-reload
    systemctl enable --quiet "${UNITS[@]}"
    systemctl restart libvirt-portfwd.service
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
        say "libvirt is not installed here: the hooks are in place and work once it is"
    fi
}

install_all() {
    install_packages
    install_release
    install_config
    install_hook
    install_cli
    install_units
    rm -rf "$PREFIX/venv"  # the layout before releases (a pip venv, tied to one Python version)
    install_sysctl
    check_libvirt
    say "installed; try: libvirt-portfwd plan <domain.xml>, libvirt-portfwd status"
}

# The runtime exactly as install_all installs it, elsewhere: a temporary prefix and root (bench/)
stage_all() {
    local name
    for name in LIBVIRT_PORTFWD_PREFIX LIBVIRT_PORTFWD_CONFIG LIBVIRT_HOOKS_DIR LIBVIRT_PORTFWD_CLI; do
        [ -n "${!name:-}" ] || die "--stage writes only where the environment says: set $name"
    done
    install_release
    install_config
    install_hook
    install_cli
}

uninstall_all() {
    local unit target
    if [ -d /run/systemd/system ]; then
        for unit in "${UNITS[@]}" "${OLD_UNITS[@]}"; do
            if ours "$UNIT_DIR/$unit"; then
                systemctl disable --now --quiet "$unit" || true
                rm -f "$UNIT_DIR/$unit"
            fi
        done
        systemctl daemon-reload
    fi
    if [ -f "$CURRENT/hooks/boot.py" ]; then
        boot cli --config "$CONFIG" remove --all || say "could not remove the live rules (see above)"
    elif [ -x "$PREFIX/venv/bin/libvirt-portfwd" ]; then
        "$PREFIX/venv/bin/libvirt-portfwd" --config "$CONFIG" remove --all || say "could not remove the live rules (see above)"
    fi
    for target in "$HOOK" "$NETWORK_HOOK"; do
        if ours "$target"; then rm -f "$target"; say "hook removed: $target"; fi
    done
    rmdir "$HOOK_DIR/qemu.d" "$HOOK_DIR/network.d" "$HOOK_DIR" 2>/dev/null || true
    if [ -L "$CLI" ] || ours "$CLI"; then rm -f "$CLI"; fi
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
    --stage) stage_all ;;
    *) die "usage: $0 [--uninstall | --stage]" ;;
esac
