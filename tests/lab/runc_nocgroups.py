#!/usr/bin/python3
"""runc for Docker inside a lab box: the container without cgroups (tests/e2e/neighbours.py).

Installed in the box as ``/usr/local/sbin/runc-nocgroups`` and named Docker's default runtime
in ``/etc/docker/daemon.json``. Why: this machine mounts cgroup v1, and systemd-nspawn mounts
its controllers read-only in a box, so runc as Docker runs it fails with ``unable to apply
cgroup configuration: mkdir /sys/fs/cgroup/cpuset/docker: read-only file system`` (runc's own
``--rootless=true`` does not help: it ignores such errors only where no cgroup path is given,
and Docker always gives one). Then, past cgroups, ``unable to join session keyring: ...
operation not permitted`` (nspawn's seccomp filter refuses keyctl): runc's
``--no-new-keyring`` is the documented way around it.

So for ``create`` and ``run`` this drops ``linux.cgroupsPath`` and ``linux.resources`` from
the bundle's config.json, adds ``--no-new-keyring``, and runs the real runc with
``--rootless=true`` (whose cgroup errors are then ignorable); every other command goes to runc
unchanged. The container keeps everything the firewall sees: its network namespace, veth on
docker0, Docker's iptables rules and docker-proxy; it only lacks cgroup limits and accounting.
"""

from __future__ import annotations

import json
import os
import sys

RUNC = "/usr/bin/runc"
VERBS = ("create", "run")


def main(args: list[str]) -> None:
    verb = next((arg for arg in args if arg in VERBS), None)
    if verb is not None:
        bundle = "."
        for flag in ("--bundle", "-b"):
            if flag in args[:-1]:
                bundle = args[args.index(flag) + 1]
        path = os.path.join(bundle, "config.json")
        with open(path) as file:
            spec = json.load(file)
        linux = spec.get("linux", {})
        linux.pop("cgroupsPath", None)
        linux.pop("resources", None)
        with open(path, "w") as file:
            json.dump(spec, file)
        args.insert(args.index(verb) + 1, "--no-new-keyring")
    os.execv(RUNC, ["runc", "--rootless=true", *args])


if __name__ == "__main__":
    main(sys.argv[1:])
