"""The libvirt qemu hook: ``<domain> <operation> <sub-operation> <extra>``, domain XML on stdin.

This module is imported on every VM operation, so it imports only os and sys (and the stdlib
``configcache`` and ``paths``) until it knows there is work: operations with nothing to do
exit before lxml, jinja2 or yaml are imported.

Operations (see README, "What the hook does"):
  prepare          check forwards and conflicts, only where ``on_error: block`` (fail the start)
  started          apply the forwards (a waiter takes over while the guest has no lease)
  reconnect        apply again: libvirtd restarted while the domain runs (never fails)
  stopped, release remove what was recorded (never fail)
  anything else    nothing (migrate, restore, attach, start, ..., unknown)

Never prints to stdout (libvirt reads it for migrate and restore) and never calls libvirt.
"""

import os
import sys

from . import configcache
from .paths import Paths

METADATA_MARK = b"urn:libvirt-portfwd:"
APPLY = ("started", "reconnect")
REMOVE = ("stopped", "release")
CHECK = ("prepare",)
NEVER_FAIL = ("reconnect", "stopped", "release")


def main(argv: list[str], config_path: str | None = None) -> int:
    os.dup2(2, 1)  # nothing of ours or of a child may reach libvirt's stdout
    if len(argv) < 2:
        sys.stderr.write("libvirt-portfwd: hook: usage: <domain> <operation> <sub-operation> <extra> < domain.xml\n")
        return 0
    name, operation = argv[0], argv[1]
    if operation not in APPLY + REMOVE + CHECK:
        return 0
    xml = _read_stdin()
    paths = Paths(config=config_path)
    if operation in REMOVE:
        uuid = _uuid_of(xml)
        if uuid is not None and not os.path.exists(paths.record(uuid)):
            return 0
        return _run(name, operation, xml, paths)
    cached = configcache.read_cache(paths.config_cache, paths.config)
    if cached is not None and not _has_work(name, xml, cached, paths):
        return 0
    if operation in CHECK and cached is not None and cached.get("on_error") != "block":
        return 0
    return _run(name, operation, xml, paths)


def _has_work(name: str, xml: bytes, cached: dict, paths: Paths) -> bool:  # type: ignore[type-arg]
    """Cheap prefilter: metadata of ours, a config entry for the domain, or a record of it."""
    if METADATA_MARK in xml or cached.get("error"):
        return True
    uuid = _uuid_of(xml)
    keys = cached.get("keys", ())
    return name in keys or uuid is None or uuid in keys or os.path.exists(paths.record(uuid))


def _run(name: str, operation: str, xml: bytes, paths: Paths) -> int:
    """The hook's error boundary: one line per failure; exit 1 only where a start may fail."""
    from . import log
    from .errors import PortfwdError

    try:
        if operation in REMOVE:
            from .teardown import remove

            uuid = _uuid_of(xml)
            if uuid is None:
                from .actions import prepare

                uuid = prepare(xml, paths).plan.uuid
            outcome = remove(uuid, paths, name)
        elif operation in CHECK:
            from .actions import check

            check(xml, paths)
            return 0
        else:
            from . import render
            from .actions import apply

            render.use_cache(paths.run_dir)  # here only: stopped/release render nothing (prerendered)
            outcome = apply(xml, paths)
    except PortfwdError as exc:
        log.error(str(exc.for_domain(name)))
        return 1 if operation not in NEVER_FAIL and _blocks(paths) else 0
    except Exception as exc:  # a bug: one line, and the traceback to the log
        import traceback

        log.error(f"{name}: internal error at {operation}: {exc!r}")
        log.error(traceback.format_exc())
        return 1 if operation not in NEVER_FAIL and _blocks(paths) else 0
    if outcome not in ("no forwards", "nothing recorded"):
        log.info(f"{name}: {operation}: {outcome}")
    return 0


def _blocks(paths: Paths) -> bool:
    """``on_error: block`` in a config that parsed; a broken config never blocks a start."""
    cached = configcache.read_cache(paths.config_cache, paths.config)
    if cached is None:  # the failure came before the config was read: read it now
        from .config import load_config
        from .errors import PortfwdError

        try:
            return load_config(paths.config, paths.config_cache).on_error == "block"
        except PortfwdError:
            return False
    return bool(not cached.get("error") and cached.get("on_error") == "block")


def _read_stdin() -> bytes:
    if sys.stdin is None or sys.stdin.isatty():
        return b""
    return sys.stdin.buffer.read()


def _uuid_of(xml: bytes) -> str | None:
    """The domain's <uuid> (libvirt writes it right after <name>), without an XML parser."""
    start = xml.find(b"<uuid>")
    end = xml.find(b"</uuid>", start)
    if start < 0 or end < 0:
        return None
    text = xml[start + len(b"<uuid>") : end].strip().decode("ascii", "replace").lower()
    return text if len(text) == 36 and text.count("-") == 4 else None


def main_network(argv: list[str], config_path: str | None = None) -> int:
    """The libvirt network hook: ``<network> <operation> <sub-operation> <extra>``.

    When a network has (re)started, libvirt has put its own firewall rules back on top of ours;
    put ours back in order. Nothing else, and never a failure (that would fail the network).
    """
    os.dup2(2, 1)
    _read_stdin()
    if len(argv) < 2 or argv[1] != "started":
        return 0
    paths = Paths(config=config_path)
    if not os.path.exists(paths.index):
        return 0  # no forward was ever recorded
    from . import log, render
    from .actions import repair
    from .errors import PortfwdError

    render.use_cache(paths.run_dir)
    try:
        repaired = repair(paths)
    except PortfwdError as exc:
        log.error(f"network {argv[0]}: {exc}")
        return 0
    except Exception as exc:  # a bug: one line, and the traceback to the log
        import traceback

        log.error(f"network {argv[0]}: internal error: {exc!r}")
        log.error(traceback.format_exc())
        return 0
    if repaired:
        log.info(f"network {argv[0]} started: forwards of {repaired} domain(s) put back in order")
    return 0
