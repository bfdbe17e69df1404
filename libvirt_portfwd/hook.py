"""The libvirt qemu hook: ``<domain> <operation> <sub-operation> <extra>``, domain XML on stdin.

Started by the installed shim through hooks/boot.py. This module is imported on every VM
operation, so it imports only the stdlib ``configcache``, ``paths``, ``policy`` and the error
boundary until it knows there is work: operations with nothing to do exit before lxml, jinja2
or yaml are imported. What each operation does and whether it may fail is ``policy.POLICY``:

  prepare          check forwards and conflicts, only where ``on_error: block`` (fail the start)
  started          apply the forwards (a waiter takes over while the guest has no lease)
  reconnect        apply again: libvirtd restarted while the domain runs (never fails)
  stopped, release remove what was recorded (never fail)
  anything else    nothing (migrate, restore, attach, start, ..., unknown)

Never prints to stdout (libvirt reads it for migrate and restore) and never calls libvirt.
"""

import os
import sys

from . import configcache, deadline, limits, policy
from .boundary import guarded
from .paths import Paths, is_uuid
from .policy import APPLY, CHECK, METADATA_MARK, REMOVE

TYPE_CHECKING = False  # no typing import at run time (hook fast path)
if TYPE_CHECKING:
    from collections.abc import Callable


def main(argv: list[str], config_path: str | None = None) -> int:
    os.dup2(2, 1)  # nothing of ours or of a child may reach libvirt's stdout
    if len(argv) < 2:
        sys.stderr.write("libvirt-portfwd: hook: usage: <domain> <operation> <sub-operation> <extra> < domain.xml\n")
        return policy.OK
    name, operation = argv[0], argv[1]
    action = policy.action(operation)
    if action is None:
        return policy.OK
    deadline.start(policy.BOUND)
    paths = Paths(config=config_path)
    xml = b""

    def work() -> int:
        nonlocal xml
        xml = _read_stdin()
        _act(action, name, operation, xml, paths)
        return policy.OK

    code = guarded(work, domain=name, what=operation)
    result = policy.hook_exit(operation, code, lambda: _blocks(name, xml, paths))
    if result == policy.BLOCKED and action == APPLY:
        guarded(lambda: _cancel(name, xml, paths), domain=name, what="refused start")
    return result


def _cancel(name: str, xml: bytes, paths: Paths) -> int:
    """The start is refused: nothing of this domain may stay live, nor be applied later."""
    uuid = _uuid_of(xml)
    if uuid is not None and (os.path.exists(paths.record(uuid)) or paths.has_intent(uuid)):
        from .intents import remove

        remove(uuid, paths, name)
    return policy.OK


def _act(action: str, name: str, operation: str, xml: bytes, paths: Paths) -> None:
    if action == REMOVE:
        uuid = _uuid_of(xml)
        if uuid is not None and not os.path.exists(paths.record(uuid)) and not paths.has_intent(uuid):
            return
        from .intents import remove

        if uuid is None:
            from .actions import prepare

            uuid = prepare(xml, paths).plan.uuid
        _report(name, operation, _by_service(paths, "remove", name, uuid, b"", lambda: remove(uuid, paths, name)))
        return
    cached = configcache.read_cache(paths.config_cache, paths.config)
    if cached is not None and not _has_work(name, xml, cached, paths):
        return
    if action == CHECK:
        if cached is None:  # a cold cache (first run after a boot or an edit): read it now, once
            from .config import load_config
            from .errors import PortfwdError

            try:
                if load_config(paths.config, paths.config_cache).on_error != "block":
                    return  # under allow, prepare refuses nothing: started says it, once
            except PortfwdError:
                return  # a broken config never blocks a start: started reports it
        elif cached.get("on_error") != "block":
            return
        _by_service(paths, "check", name, "-", xml, lambda: _check(xml, paths))
        return
    assert action == APPLY
    _report(name, operation, _by_service(paths, "apply", name, _uuid_of(xml) or "-", xml, lambda: _apply(xml, paths)))


def _by_service(paths: Paths, op: str, name: str, uuid: str, body: bytes, itself: "Callable[[], str]") -> str:
    """The work done by the resident service where it runs (warm.py), else here: ``itself``,
    or, once the service had queued it, whatever is still pending (nothing is done twice)."""
    from . import warm

    def pending() -> str:
        from .intents import carry_out_for

        return carry_out_for(uuid, paths)

    return warm.hand_over(paths, op, name, uuid, body, itself, pending)


def _check(xml: bytes, paths: Paths) -> str:
    from .actions import check

    check(xml, paths)
    return "checked"


def _apply(xml: bytes, paths: Paths) -> str:
    from . import render
    from .intents import apply

    render.use_cache(paths.run_dir)  # here only: stopped/release render nothing (prerendered)
    return apply(xml, paths)


def _report(name: str, operation: str, outcome: str) -> None:
    if outcome not in ("no forwards", "nothing recorded"):
        from . import log

        log.info(f"{name}: {operation}: {outcome}")


def _has_work(name: str, xml: bytes, cached: dict, paths: Paths) -> bool:  # type: ignore[type-arg]
    """Cheap prefilter: metadata of ours, a config entry for the domain, or a record of it."""
    if METADATA_MARK in xml or cached.get("error"):
        return True
    uuid = _uuid_of(xml)
    keys = cached.get("keys", ())
    return name in keys or uuid is None or uuid in keys or os.path.exists(paths.record(uuid)) or paths.has_intent(uuid)


def _blocks(name: str, xml: bytes, paths: Paths) -> bool:
    """After a failure: did the admin ask for ``on_error: block`` (in a config that parses), for
    a domain with forwards of ours (our metadata, or a config entry)? A broken config, or one
    that cannot even be read now, never blocks a start."""
    try:
        from .config import load_config

        config = load_config(paths.config, paths.config_cache)
    except Exception:  # unreadable or broken (reported by the work that failed): allow
        return False
    uuid = _uuid_of(xml)
    ours = METADATA_MARK in xml or name in config.domains or (uuid is not None and uuid in config.domains)
    return config.on_error == "block" and ours


def _read_stdin() -> bytes:
    """At most one byte more than the domain XML limit: parse_domain refuses that much, and a stop
    still finds the UUID near the top (libvirt ignores a hook that leaves its stdin unread)."""
    if sys.stdin is None or sys.stdin.isatty():
        return b""
    return sys.stdin.buffer.read(limits.DOMAIN_XML.value + 1)


def _uuid_of(xml: bytes) -> str | None:
    """The domain's <uuid> (libvirt writes it right after <name>), without an XML parser."""
    start = xml.find(b"<uuid>")
    end = xml.find(b"</uuid>", start)
    if start < 0 or end < 0:
        return None
    text = xml[start + len(b"<uuid>") : end].strip().decode("ascii", "replace").lower()
    return text if is_uuid(text) else None


def main_network(argv: list[str], config_path: str | None = None) -> int:
    """The libvirt network hook: ``<network> <operation> <sub-operation> <extra>``.

    When a network has (re)started, libvirt has put its own firewall rules back on top of ours;
    put ours back in order. Nothing else, and never a failure (that would fail the network).
    """
    os.dup2(2, 1)
    _read_stdin()
    if len(argv) < 2 or argv[1] not in policy.NETWORK_POLICY:
        return policy.OK
    paths = Paths(config=config_path)
    if not os.path.exists(paths.index):
        return policy.OK  # no forward was ever recorded

    def work() -> int:
        from . import log, render
        from .reconcile import repair

        render.use_cache(paths.run_dir)
        repaired = repair(paths)
        if repaired:
            log.info(f"network {argv[0]} started: forwards of {repaired} domain(s) put back in order")
        return policy.OK

    guarded(work, domain=f"network {argv[0]}")
    return policy.OK
