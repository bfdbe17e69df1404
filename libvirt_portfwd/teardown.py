"""Removing a domain's rules: from what was recorded, never from today's config or XML.

This is the hook's stop path (``stopped``, ``release``), so it stays light: it reads the
record as JSON and applies the removal the backend rendered when the rules went live. Only
if the firewall is no longer as we left it (the prerendered transaction is refused) does it
read the firewall and render every other domain's rules again (which also undoes whatever
half of the refused transaction was applied: iptables-restore commits table by table).
A removal is asked for with an intent first (state.py): one that cannot run now (the lock,
the time bound, a firewall tool) stays pending, and whoever holds the lock next completes it.
"""

from __future__ import annotations

from . import log, state
from .errors import FirewallError, PortfwdError
from .paths import Paths


def remove_locked(uuid: str, paths: Paths, name: str = "") -> str:
    """Under the lock already held."""
    data = state.read(paths, uuid)
    if data is None:
        return "nothing recorded"
    name = data.get("name") or name
    index = state.read_index(paths)
    if data.get("status") == state.LIVE:
        others = sum(
            1 for u, e in index.items() if u != uuid and e["status"] == state.LIVE and e["backend"] == data["backend"]
        )
        try:
            _remove_rules(uuid, data, others, paths)
        except PortfwdError as exc:
            raise exc.for_domain(name) from None
    state.delete(paths, uuid, index)
    log.info(f"{name}: forwards removed ({len(data.get('forwards') or ())} recorded)")
    return "removed"


def remove_all(paths: Paths) -> int:
    """Every rule of ours, in every available backend, and every record (uninstall)."""
    from .backends import available_backends

    with state.locked(paths):
        uuids = state.uuids(paths)
        for backend in available_backends():
            backend.apply(backend.rebuild([]))
        state.replace_all(paths, {})
        for uuid in state.take_intents(paths):  # nothing is to be applied any more
            state.done_intent(paths, uuid)
    log.info(f"removed every forward ({len(uuids)} domain(s))")
    return len(uuids)


def _remove_rules(uuid: str, data: state.Data, others: int, paths: Paths) -> None:
    from .backends import select_backend

    backend = select_backend(data["backend"], where=paths.record(uuid))
    prerendered = (data.get("teardown") or {}).get("last" if others == 0 else "other")
    if prerendered is not None:
        try:
            backend.apply(backend.bind(prerendered, last=others == 0))
            return
        except FirewallError:
            pass  # refused as a whole, so nothing changed: someone edited our rules
    from .records import load_record  # the slow, sure way: every other domain's rules, rebuilt

    index = state.read_index(paths)
    live = [u for u, e in index.items() if u != uuid and e["status"] == state.LIVE and e["backend"] == backend.name]
    plans = [r.plan for r in (load_record(paths, u) for u in live) if r is not None]
    backend.apply(backend.rebuild(plans))
