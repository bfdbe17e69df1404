#!/bin/sh
# managed-by: libvirt-portfwd (install.sh writes this file; it never overwrites one without this line)
# The libvirt @KIND@ hook. POSIX sh and nothing else, so that it runs whatever is broken below
# it: it hands over to the Python runtime (hooks/boot.py) and turns every way that can fail into
# an exit code libvirt may see. Written by install.sh from hooks/shim.sh; values from
# libvirt_portfwd/policy.py. Never prints to stdout (libvirt reads it for migrate and restore).
KIND=@KIND@
BOOT=@BOOT@
CONFIG=@CONFIG@
MAY_FAIL=' @MAY_FAIL@ '
BLOCKED=@BLOCKED@
BROKEN=@BROKEN@
MARK='@MARK@'

exec >&2
/usr/bin/python3 -I -S "$BOOT" "$KIND" "$CONFIG" "$@"
rc=$?
[ "$rc" -eq 0 ] && exit 0
[ "$KIND" = qemu ] || exit 0
case "$MAY_FAIL" in *" $2 "*) ;; *) exit 0 ;; esac
[ "$rc" -eq "$BLOCKED" ] && exit "$BLOCKED"

# The runtime could not decide (it did not start, or hooks/boot.py said BROKEN and why). Refuse
# the start only where a shell can tell that the admin asked for it: our metadata in the domain
# XML (still unread on stdin) and `on_error: block` in a readable config.
say() {
    printf 'libvirt-portfwd: %s\n' "$1"
    logger -t libvirt-portfwd -p daemon.err -- "$1" 2>/dev/null
}
[ "$rc" -eq "$BROKEN" ] || say "$1: $2: the installed runtime cannot run (/usr/bin/python3 $BOOT exited $rc): run ./install.sh again to repair"
config=${CONFIG:-${LIBVIRT_PORTFWD_ROOT:-}/etc/libvirt-portfwd/config.yaml}
if grep -Eq "^on_error:[[:space:]]*[\"']?block[\"']?[[:space:]]*(#.*)?\$" "$config" 2>/dev/null &&
    grep -Fq "$MARK" 2>/dev/null; then
    say "$1: $2: start refused (on_error: block in $config, and the domain has forwards of ours)"
    exit "$BLOCKED"
fi
exit 0
