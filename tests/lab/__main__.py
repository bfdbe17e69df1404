"""Bring a lab up by hand: ``python3 -m tests.lab [GUEST...]`` (as root, from the repo root).

Builds (or takes from the cache) the Debian root, starts the namespaces, libvirtd inside the
root and the network, boots the named guests (default: one called lab1), prints how to reach
everything, waits for Enter or ^C, and tears it all down.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

from .guest import HTTP_PORTS, UDP_PORTS
from .host import FIREWALL_BACKENDS, Lab, missing_prerequisites
from .proc import LabError
from .rootfs import DEFAULT_RELEASE, RELEASES


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m tests.lab", description=__doc__.splitlines()[0])
    parser.add_argument("guests", nargs="*", default=["lab1"], help="guest (domain) names to boot")
    parser.add_argument(
        "--release", choices=RELEASES, default=DEFAULT_RELEASE, help="the Debian root (libvirt's version)"
    )
    parser.add_argument(
        "--firewall-backend", choices=FIREWALL_BACKENDS, help="libvirt's firewall_backend (default: as packaged)"
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep serial logs and XML after teardown")
    return parser.parse_args(argv)


def describe(lab: Lab) -> str:
    lines = [
        f"host namespace   {lab.host_ns}  ({lab.host_addr}, bridge {lab.bridge}, "
        f"libvirt firewall {lab.firewall_backend or 'as packaged'})",
        f"client namespace {lab.client_ns}  ({lab.client_addr})",
        f"workdir          {lab.workdir}",
    ]
    for guest in lab.guests.values():
        lines.append(f"guest {guest.name:<10} {guest.address}  macs {', '.join(guest.macs)}  uuid {guest.uuid}")
    lines += [
        f"HTTP ports {', '.join(map(str, HTTP_PORTS))}; UDP echo ports {', '.join(map(str, UDP_PORTS))}",
        f"try: {' '.join(lab.host_argv(['virsh', '-c', 'qemu:///system', 'list', '--all']))}",
        f"     ip netns exec {lab.client_ns} python3 -c 'import urllib.request as u; "
        f'print(u.urlopen("http://{lab.host_addr}:PORT/").read())\'',
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    missing = missing_prerequisites(args.release)
    if missing:
        print(f"lab: missing {', '.join(missing)} (run tests/lab/install_deps.sh as root)", file=sys.stderr)
        return 1
    try:
        with Lab(keep_workdir=args.keep_workdir, release=args.release, firewall_backend=args.firewall_backend) as lab:
            for name in args.guests:
                lab.start_guest(name)
            print(describe(lab))
            print("press Enter (or ^C) to tear the lab down")
            with contextlib.suppress(KeyboardInterrupt):
                sys.stdin.readline()
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
