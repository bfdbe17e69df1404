#!/bin/sh
# A stock host's boot: run by tests/lab/box.py as
#   unshare --mount --propagation private -- sh box_boot.sh CGROUP LOWER UPPER WORK ROOT NSPAWN-ARGS...
# In that private mount namespace (nothing propagates to the machine's) it mounts an overlay of the
# cached root file system LOWER (never written) with the box's own UPPER, and a tmpfs over /run
# (systemd-nspawn keeps its propagation directories there), puts itself into a cgroup of its own
# (CGROUP under each hierarchy systemd-nspawn uses, so that what nspawn makes there is removed
# with it by box.py), then becomes systemd-nspawn booting ROOT with systemd as PID 1.
set -eu
cgroup=$1 lower=$2 upper=$3 work=$4 root=$5
shift 5
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    hierarchies=/sys/fs/cgroup  # cgroup v2 only
else
    hierarchies="/sys/fs/cgroup/systemd /sys/fs/cgroup/unified"
fi
for hierarchy in $hierarchies; do
    if [ -d "$hierarchy" ]; then
        mkdir -p "$hierarchy/$cgroup"
        echo $$ >"$hierarchy/$cgroup/cgroup.procs"
    fi
done
mount -t overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" libvirt-portfwd-box "$root"
mount -t tmpfs -o mode=0755 libvirt-portfwd-box-run /run
exec systemd-nspawn -D "$root" "$@"
