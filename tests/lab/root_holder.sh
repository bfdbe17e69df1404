#!/bin/sh
# The lab host's root: run by tests/lab/hostroot.py as
#   ip netns exec NS unshare --mount --propagation private -- sh root_holder.sh LOWER UPPER WORK ROOT [SRC DST ro|rw]...
# In that private mount namespace (nothing propagates to the machine's), it mounts an overlay of the
# cached root file system LOWER (never written) with the lab's own UPPER, and inside it /proc, a
# /sys of the lab's network namespace, a small /dev (null, zero, full, random, urandom, tty,
# net/tun, its own devpts), tmpfs /run and /tmp, and the given bind mounts (same path inside,
# e.g. the lab's workdir). Then it prints "ready" and becomes `sleep infinity` chrooted there:
# every lab command enters its namespaces (nsenter -t PID -m -n -r). The mounts go when the last
# process in the namespace exits.
set -eu
lower=$1 upper=$2 work=$3 root=$4
shift 4
mount -t overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" libvirt-portfwd-lab "$root"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t tmpfs -o mode=0755,size=1m libvirt-portfwd-lab-dev "$root/dev"
mkdir "$root/dev/net" "$root/dev/pts" "$root/dev/shm"
for node in null zero full random urandom tty net/tun; do
    : >"$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mount -t tmpfs -o mode=1777 libvirt-portfwd-lab-shm "$root/dev/shm"
mount -t tmpfs -o mode=0755 libvirt-portfwd-lab-run "$root/run"
mkdir -m 1777 "$root/run/lock"
mount -t tmpfs -o mode=1777 libvirt-portfwd-lab-tmp "$root/tmp"
while [ $# -ge 3 ]; do
    mkdir -p "$root$2"
    mount --bind "$1" "$root$2"
    if [ "$3" = ro ]; then
        mount -o remount,bind,ro "$root$2"
    fi
    shift 3
done
echo "ready $$"
exec chroot "$root" /bin/sleep infinity
