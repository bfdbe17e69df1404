#!/bin/sh
# /init of the lab guest's initramfs (busybox ash, PID 1). Built into the image by
# tests/lab/guest.py, which also writes /etc/lab.conf:
#   MODULES     kernel modules to insmod from /modules, in order
#   HTTP_PORTS  TCP ports served by busybox httpd ("port<N> <hostname>")
#   UDP_PORTS   UDP ports answered by /bin/udpecho ("<hostname>:<port>:<payload>")
# The hostname comes from the kernel command line: portfwd.hostname=NAME.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

say() {
    echo "lab-init: $*" >/dev/console
}

mount_filesystems() {
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev 2>/dev/null
    mkdir -p /dev/pts /tmp /run /var/log
}

cmdline_option() {  # cmdline_option NAME DEFAULT: the value of NAME=... on the kernel command line
    value=$2
    read -r cmdline </proc/cmdline
    for arg in $cmdline; do
        case "$arg" in
            "$1"=*) value="${arg#"$1"=}" ;;
        esac
    done
    echo "$value"
}

read_hostname() {
    cmdline_option portfwd.hostname lab-guest
}

# portfwd.renew=SECONDS on the kernel command line: udhcpc renews its lease that often (SIGUSR1),
# so that a reservation changed on the host reaches the guest in seconds, not half a lease.
start_renewals() {
    every=$(cmdline_option portfwd.renew "")
    [ -n "$every" ] || return 0
    # shellcheck disable=SC2046 # one argument per udhcpc (one per NIC)
    (while sleep "$every"; do kill -USR1 $(pidof udhcpc) 2>/dev/null; done) &
}

# portfwd.fetch=URL on the kernel command line: the guest fetches URL every second and writes
# what it got to the console ("lab-init: fetch URL: BODY", or "failed"): the guest's own outgoing
# connections, seen in its serial log. The time limit is busybox timeout's, not wget's -T:
# Debian 12's busybox-static 1.35 is built without wget's -T and segfaults when given it.
start_fetches() {
    url=$(cmdline_option portfwd.fetch "")
    [ -n "$url" ] || return 0
    (while sleep 1; do
        body=$(timeout 3 wget -q -O - "$url" 2>/dev/null) || body=failed
        say "fetch $url: $body"
    done) &
}

load_modules() {
    for module in $MODULES; do
        insmod "/modules/$module.ko" || say "insmod $module failed"
    done
}

wait_for_path() {
    tries=0
    while [ ! -e "$1" ] && [ "$tries" -lt 50 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    [ -e "$1" ]
}

wait_for_link() {
    # A DISCOVER sent before the kernel's linkwatch marks the link up (operstate "up", up to
    # 1 s after carrier) is dropped and costs udhcpc a 3 s timeout.
    tries=0
    while [ "$(cat "/sys/class/net/$1/operstate" 2>/dev/null)" != up ] && [ "$tries" -lt 50 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
}

start_network() {
    ip link set lo up
    wait_for_path /sys/class/net/eth0 || say "no eth0"
    for path in /sys/class/net/eth*; do
        [ -e "$path" ] || continue
        ifname="${path##*/}"
        ip link set "$ifname" up
        wait_for_link "$ifname"
        udhcpc -f -i "$ifname" -s /etc/udhcpc.script -x "hostname:$HOSTNAME" \
            -T 3 -t 100 -A 1 >/dev/console 2>&1 &
    done
}

start_services() {
    for port in $HTTP_PORTS; do
        mkdir -p "/www/$port"
        echo "port$port $HOSTNAME" >"/www/$port/index.html"
        httpd -p "$port" -h "/www/$port"
    done
    # shellcheck disable=SC2086 # one argument per port
    /bin/udpecho "$HOSTNAME" $UDP_PORTS &
}

start_acpid() {
    # busybox acpid maps the power button (KEY_POWER) to /etc/acpi/PWRF/00000080.
    if wait_for_path /dev/input/event0; then
        acpid -d -c /etc/acpi >/dev/console 2>&1 &
    else
        say "no /dev/input/event0: virsh shutdown will not work"
    fi
}

main() {
    mount_filesystems
    # shellcheck source=/dev/null
    . /etc/lab.conf
    HOSTNAME=$(read_hostname)
    export HOSTNAME
    hostname "$HOSTNAME"
    load_modules
    start_acpid
    start_network
    start_services
    start_renewals
    start_fetches
    say "ready ($HOSTNAME)"
    while :; do
        sleep 3600
    done
}

main
