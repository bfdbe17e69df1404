#!/bin/sh
# udhcpc script of the lab guest: sets the leased address and a default route.
# udhcpc passes: $1 = deconfig|bound|renew|nak, and $interface $ip $subnet $router.
# shellcheck disable=SC2154 # the variables come from udhcpc's environment
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ;;
    bound | renew)
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
        # busybox "ip route show default" lists every route: look for the default one by hand
        if [ -n "$router" ] && ! ip route | grep -q "^default"; then
            for gw in $router; do
                route add default gw "$gw" dev "$interface" && break
            done
        fi
        echo "lab-udhcpc: $interface $ip" >/dev/console
        ;;
esac
exit 0
