#!/bin/sh
# managed-by: libvirt-portfwd (install.sh writes this file; it never overwrites one without this line)
# The libvirt @KIND@ hook. POSIX sh and nothing else, so that it runs whatever is broken below
# it: it hands over to the Python runtime (hooks/boot.py) and turns every way that can fail into
# an exit code libvirt may see. Written by install.sh from hooks/shim.sh; values from
# libvirt_portfwd/policy.py. Never prints to stdout (libvirt reads it for migrate and restore).
KIND=@KIND@
BOOT=@BOOT@
CONFIG=@CONFIG@
ACTIVE=' @ACTIVE@ '
MAY_FAIL=' @MAY_FAIL@ '
BLOCKED=@BLOCKED@
BROKEN=@BROKEN@
MARK='@MARK@'

say() {
    printf 'libvirt-portfwd: %s\n' "$1"
    logger -t libvirt-portfwd -p daemon.err -- "$1" 2>/dev/null
}
who="$1: $2"
[ "$KIND" = qemu ] || who="network $1: $2"
# An operation we do nothing for (migrate, restore, start, attach, ...): done, without Python.
case "$ACTIVE" in *" $2 "*) ;; *) exit 0 ;; esac
config=${CONFIG:-${LIBVIRT_PORTFWD_ROOT:-}/etc/libvirt-portfwd/config.yaml}
BLOCK="^on_error:[[:space:]]*[\"']?block[\"']?[[:space:]]*(#.*)?\$"
# prepare checks only where the admin asked for on_error: block (started checks again anyway).
[ "$KIND:$2" = qemu:prepare ] && ! grep -Eq "$BLOCK" "$config" 2>/dev/null && exit 0

exec >&2
if [ -x /usr/bin/python3 ] && [ -f "$BOOT" ]; then
    /usr/bin/python3 -I -S "$BOOT" "$KIND" "$CONFIG" "$@"
    rc=$?
    [ "$rc" -eq 0 ] && exit 0
    # BROKEN: hooks/boot.py said what broke; BLOCKED: the runtime decided; else it crashed
    [ "$rc" -eq "$BROKEN" ] || [ "$rc" -eq "$BLOCKED" ] ||
        say "$who: the installed runtime failed (/usr/bin/python3 $BOOT exited $rc): run ./install.sh again to repair"
else
    rc=$BROKEN
    say "$who: the installed runtime is missing (/usr/bin/python3 or $BOOT): run ./install.sh again to repair"
fi
[ "$KIND" = qemu ] || exit 0
case "$MAY_FAIL" in *" $2 "*) ;; *) exit 0 ;; esac
[ "$rc" -eq "$BLOCKED" ] && exit "$BLOCKED"

# The runtime could not decide. Refuse the start only where a shell can tell that the admin
# asked for it: our metadata in the domain XML (still unread on stdin) and `on_error: block` in
# a readable config.
if grep -Eq "$BLOCK" "$config" 2>/dev/null &&
    grep -Fq "$MARK" 2>/dev/null; then
    say "$who: start refused (on_error: block in $config, and the domain has forwards of ours)"
    exit "$BLOCKED"
fi
exit 0
