"""The lease waiter: started detached by the hook when a guest has no address yet.

It polls the lease files (cheap stat calls) until the domain's addresses are known, applies
its forwards once, and exits. It gives up after ``lease_wait`` seconds with a log line, and
does nothing if the domain stopped or started again meanwhile (its record is gone or has
another token). It never calls libvirt.
"""

import argparse
import os
import sys
import time

from . import log, render, state
from .boundary import guarded
from .config import load_config
from .paths import Paths
from .reconcile import apply_waiting
from .records import load_record, save_record

POLL_SECONDS = 0.2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="libvirt-portfwd-waiter")
    parser.add_argument("--config")
    parser.add_argument("uuid")
    parser.add_argument("token")
    args = parser.parse_args(argv)
    paths = Paths(config=args.config)
    render.use_cache(paths.run_dir)
    return guarded(lambda: wait(paths, args.uuid, args.token), what=f"waiter for {args.uuid}")


def wait(paths: Paths, uuid: str, token: str) -> int:
    record = load_record(paths, uuid)
    if record is None or record.token != token:
        return 0
    deadline = time.monotonic() + load_config(paths.config, paths.config_cache).lease_wait
    seen: tuple[tuple[int, int], ...] | None = None
    while True:
        current = load_record(paths, uuid)
        if current is None or current.token != token:
            return 0  # the domain stopped, or started again with a waiter of its own
        stamp = lease_files_stamp(paths)
        if stamp != seen:
            seen = stamp
            outcome = apply_waiting(paths, uuid, token)
            if outcome is not None:
                if outcome != "cancelled":
                    log.info(f"{record.name}: lease arrived, {outcome}")
                return 0
        if time.monotonic() > deadline:
            timed_out(paths, uuid, token)
            log.error(
                f"{record.name}: no lease of {', '.join(record.waiting_macs)} within lease_wait; its forwards "
                "are not live yet: the service (libvirt-portfwd.service) applies them when the lease appears "
                f"(where it does not run: 'libvirt-portfwd apply {record.name}' then)"
            )
            return 1
        time.sleep(POLL_SECONDS)


def timed_out(paths: Paths, uuid: str, token: str) -> None:
    """Mark the waiting record as past its lease_wait (status shows it), if it is still ours."""
    with state.locked(paths):
        record = load_record(paths, uuid)
        if record is not None and record.token == token and record.status == state.WAITING:
            record.timed_out_at = time.time()
            save_record(paths, record)


def lease_files_stamp(paths: Paths) -> tuple[tuple[int, int], ...]:
    """Identity of every lease and network status file: any rewrite changes it."""
    stamps = []
    for directory in (paths.dnsmasq_dir, paths.network_dir):
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name.endswith((".status", ".xml")):
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                stamps.append((st.st_ino, st.st_mtime_ns))
    return tuple(stamps)


if __name__ == "__main__":
    sys.exit(main())
