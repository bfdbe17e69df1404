"""The resident service (``libvirt-portfwd serve``, the unit libvirt-portfwd.service): owns every
job that outlives a hook run, and takes the hooks' work where it runs.

- The firewall: no libvirt hook fires after libvirtd reloads its firewall on SIGHUP, nor after
  a firewalld reload, and an admin may flush anything at any time. The service follows every
  ruleset change (``nft monitor``; iptables-nft changes are nftables changes too), waits for the
  burst to end, and checks that every recorded live forward is reachable (our rules in place,
  our accept above libvirt's reject) and that no rule of ours belongs to a domain not recorded
  live. Only if not, it rebuilds our rules from the records, under the lock. Our own repairs
  show up as changes too, and then find everything in place: no loop. A periodic check covers
  changes it cannot see (iptables-legacy).
- Pending intents a hook could not carry out (the lock busy, its time bound spent, a firewall
  command hanging) are completed within a second, then tried less and less often while they
  keep failing.
- The guests' addresses: lease and network files are watched (inotify: dirwatch.py) and looked
  at every second; a live forward whose guest moved is re-pointed (follow.py), a waiting domain
  gets its forwards when its lease appears.
- The warm path: the hooks hand their work to it over a root-only socket (warm.py), one request
  at a time, between the steps above.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

from . import dirwatch, libnft, log, run, state
from .boundary import guarded
from .errors import PortfwdError
from .paths import Paths

QUIET = 0.15  # seconds without a change before checking: a reload is a burst of changes
AFTER_REQUEST = 0.5  # ...and at least this long after a hook's request, as the follow-ups: its
# changes are ours, and a VM's start or stop is a burst of requests that would each wait for them
PERIOD = 30.0  # check this often even when nothing was seen
PENDING_POLL = 1.0  # while intents are pending (a hook could not finish): try this often, then less
LOCK_WAIT = 0.5  # following leases, the service waits this long for the lock, then tries next time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="libvirt-portfwd serve", description=__doc__.split("\n")[0])
    parser.add_argument("--config")
    parser.add_argument("--root", help="prefix for every system path (testing)")
    parser.add_argument("--period", type=float, default=PERIOD, help=f"seconds between checks (default {PERIOD})")
    parser.add_argument(
        "--no-socket", action="store_true", help="take no hook's work: every hook does its own (no warm path)"
    )
    args = parser.parse_args(argv)
    paths = Paths(root=args.root, config=args.config)
    return guarded(lambda: serve(paths, args.period, not args.no_socket), what="service")


def serve(paths: Paths, period: float, hooks: bool = True) -> int:
    from . import render
    from .reconcile import repair

    render.use_cache(paths.run_dir)
    if libnft.use():  # nft's transactions in this process, on one netlink socket (libnft.py)
        run.in_process = libnft.run
    log.info("service started")
    repair(paths)
    monitor = subprocess.Popen(
        ["nft", "monitor", "ruleset"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
    )
    signal.signal(signal.SIGTERM, _stop)  # a clean exit, so that nft monitor goes with us
    try:
        if not hooks:
            return _follow(paths, period, monitor, None)
        with _listening(paths) as listener:
            return _follow(paths, period, monitor, listener)
    finally:
        monitor.kill()
        monitor.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(paths.service_status)


@contextlib.contextmanager
def _listening(paths: Paths) -> Iterator[socket.socket]:
    """The hooks' socket (warm.py): root's only, removed when the service ends (if still ours)."""
    path = paths.service_socket
    os.makedirs(paths.run_dir, mode=0o755, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a dead service's
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(umask)
    listener.listen(16)
    inode = os.stat(path).st_ino
    try:
        yield listener
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == inode:
                os.unlink(path)


Seen = tuple[tuple[tuple[int, int], ...], tuple[tuple[str, str], ...]]  # lease files' stamp, the records'


Stamp = tuple[tuple[int, int], ...]  # the lease and network files' identities (waiter.lease_files_stamp)


def follow_addresses(
    paths: Paths, seen: tuple[Seen, float | None] | None, stamp: Stamp, index: dict[str, state.Data]
) -> tuple[Seen, float | None] | None:
    """Live domains whose guest address moved are re-pointed (follow.py) when a lease or network
    file changes (``stamp``), when the records change (``index``: a domain went live, its lease's
    expiry counts from now), or when the first lease they target runs out; called about every
    second. Returns what was seen, and that expiry time."""
    from .follow import live_expiry, retarget

    records = tuple(sorted((uuid, str(entry.get("status"))) for uuid, entry in index.items()))
    now_seen: Seen = (stamp, records)
    if seen is not None and now_seen == seen[0] and (seen[1] is None or time.time() < seen[1]):
        return seen
    if not _say(lambda: retarget(paths, LOCK_WAIT), "its guest address moved: "):
        return seen  # seen unchanged: tried again next second
    return now_seen, live_expiry(paths)


def follow_leases(paths: Paths, seen: Stamp | None, stamp: Stamp, index: dict[str, state.Data]) -> Stamp | None:
    """Waiting domains (a waiter timed out, was killed, or never ran) get their forwards when a
    lease or network file changes; called about every second. Returns what was seen."""
    from .reconcile import apply_all_waiting

    if not any(e.get("status") == state.WAITING for e in index.values()):
        return None
    if stamp == seen:
        return seen
    if not _say(lambda: apply_all_waiting(paths, LOCK_WAIT), "lease arrived, "):
        return seen  # seen unchanged: tried again next second
    return stamp


def _say(step: Callable[[], dict[str, str]], what: str) -> bool:
    """Run one of the service's follow-ups and log what it did per domain; False when it could
    not run (the lock busy: quietly; anything else: one line), to be tried again next second."""
    try:
        done = step()
    except PortfwdError as exc:
        if not exc.retry:
            log.error(str(exc))
        return False
    for name, outcome in done.items():
        log.info(f"{name}: {what}{outcome} (service)")
    return True


def _warm_config(paths: Paths) -> None:
    """The config's cache (configcache.py) made again when the config changed (a stat here; the
    YAML parsed once per edit): a hook with nothing to do then never parses YAML, even the first
    one after a boot or an edit. A broken config is cached as broken (the hooks report it)."""
    from .config import load_config
    from .configcache import read_cache

    if read_cache(paths.config_cache, paths.config) is None:
        with contextlib.suppress(PortfwdError, OSError):
            load_config(paths.config, paths.config_cache)


def _answer(listener: socket.socket, paths: Paths) -> None:
    """One hook's request (warm.py); whatever goes wrong, the hook does the work itself."""
    from . import warm

    conn, _ = listener.accept()
    with conn, contextlib.suppress(OSError):  # the hook gave up or went away: it falls back on its own
        warm.serve(conn, paths)


def _publish(paths: Paths, counts: dict[str, int]) -> None:
    """What the service has done since it started (``service.json``: its pid, the hooks'
    requests it answered, the rebuilds it made): for an admin, doctor and the tests."""
    tmp = f"{paths.service_status}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(counts, handle)
    os.replace(tmp, paths.service_status)


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _follow(paths: Paths, period: float, monitor: subprocess.Popen[str], listener: socket.socket | None) -> int:
    from .reconcile import repair
    from .waiter import lease_files_stamp

    assert monitor.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(monitor.stdout, selectors.EVENT_READ)
    if listener is not None:
        selector.register(listener, selectors.EVENT_READ)
    files = dirwatch.watch((paths.dnsmasq_dir, paths.network_dir))  # leases and networks: wake at once
    if files is not None:
        selector.register(files, selectors.EVENT_READ)
    due = time.monotonic() + period
    counts = {"pid": os.getpid(), "requests": 0, "rebuilds": 0}
    _publish(paths, counts)
    changed, hold = False, 0.0
    backoff, seen, retry_at = PENDING_POLL, state.pending_intents(paths), 0.0
    leases: Stamp | None = None
    addresses: tuple[Seen, float | None] | None = None
    while True:
        now = time.monotonic()
        pending = state.pending_intents(paths)  # a listdir: cheap enough to look every second
        if pending != seen:  # new intents (a hook that could not finish): try them now
            backoff, seen, retry_at = PENDING_POLL, pending, now
        if now >= hold:  # not while hooks are at work: a start or a stop is a burst of requests
            _warm_config(paths)  # the hooks' prefilter reads the cache: kept fresh for them
            stamp, index = lease_files_stamp(paths), state.read_index(paths)  # read once for both
            addresses = follow_addresses(
                paths, addresses, stamp, index
            )  # live domains: re-pointed when their guest moves
            leases = follow_leases(paths, leases, stamp, index)  # waiting domains: applied when their lease appears
        wake = min(due, retry_at) if pending else due
        if hold > now:  # the follow-ups' turn comes then
            wake = min(wake, hold)
        timeout = max(QUIET, hold - now) if changed else max(0.0, min(wake - now, PENDING_POLL))
        ready = [key.fileobj for key, _ in selector.select(timeout)]
        if listener is not None and listener in ready:
            _answer(listener, paths)
            hold = time.monotonic() + AFTER_REQUEST
            counts["requests"] += 1
            _publish(paths, counts)
        if files is not None and files in ready:
            files.drain()  # the follow-ups, next turn, read what changed
        if monitor.stdout in ready:
            if not monitor.stdout.readline():
                raise PortfwdError("service stopped", "nft monitor exited")
            changed = True
        if ready:
            continue
        now = time.monotonic()
        retry = bool(pending) and now >= retry_at
        if not (changed or retry or now >= due):
            continue
        if retry:  # still pending after this try: less and less often
            retry_at, backoff = now + backoff, min(backoff * 2, period)
        changed = False
        due = now + period
        try:
            repaired = repair(paths)
        except PortfwdError as exc:
            if exc.what == "lock busy":  # someone else holds it: not a failure to back off from
                retry_at, backoff = now + PENDING_POLL, PENDING_POLL
            else:
                log.error(str(exc))
            continue
        if repaired:
            counts["rebuilds"] += 1
            _publish(paths, counts)
            log.info(f"service: forwards of {repaired} domain(s) were not as recorded; rules rebuilt")
