"""Carrying out pending intents: what hooks asked for (state.py), in the order they asked.

Every change a hook or the CLI makes goes this way: write the intent (no lock), then, under the
lock, carry out every pending intent, its own among them. A hook that runs out of its time
bound, finds the lock busy or a firewall command hanging, or is killed at any instant, leaves
its intent behind, and whoever holds the lock next (the next hook of any domain, the service
within a second, the lease waiter, ``sync``) completes it. An intent is deleted only once it is
done: a removal that fails stays pending until it succeeds (nothing rebuilds its rules in the
meantime: the service carries intents out before it repairs); an apply that failed for a reason
that will not pass by waiting (bad input, a firewall tool's refusal) was reported and is dropped.
Stdlib only until an apply is carried out (the stop path imports this).
"""

from __future__ import annotations

import os

from . import log, state
from .errors import PortfwdError
from .paths import Paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .actions import Prepared


def apply(xml: bytes, paths: Paths, queued: Callable[[], None] = lambda: None) -> str:
    """Bring the domain's rules in line with its declaration; return what was done.

    Bad input fails here, before anything is written. Then the change goes by way of an APPLY
    intent (intents.py): if it cannot be carried out now (the lock, the time bound), whoever
    holds the lock next completes it. ``queued`` is called once the intent is written (the
    service tells the hook so: warm.py)."""
    from .actions import prepare

    prepared = prepare(xml, paths)
    plan = prepared.plan
    if not plan.forwards and state.read(paths, plan.uuid) is None and not paths.has_intent(plan.uuid):
        return "no forwards"
    state.write_intent(paths, plan.uuid, state.APPLY, plan.name, xml)
    queued()
    return carry_out_for(plan.uuid, paths, {plan.uuid: prepared})


def remove(uuid: str, paths: Paths, name: str = "", queued: Callable[[], None] = lambda: None) -> str:
    """The domain's rules and record removed, by way of a REMOVE intent (the stop path: light)."""
    if not os.path.exists(paths.record(uuid)) and not paths.has_intent(uuid):
        return "nothing recorded"
    state.write_intent(paths, uuid, state.REMOVE, name)
    queued()
    return carry_out_for(uuid, paths)


def carry_out(
    paths: Paths, prepared: dict[str, Prepared] | None = None, own: str = ""
) -> dict[str, str | PortfwdError]:
    """Under the lock: every pending intent, oldest first; uuid -> what was done, or the error.
    Those of other domains than ``own`` are logged here.

    ``prepared``: plans already made from the intents' XML (the caller's own), not made again."""
    from .teardown import remove_locked

    results: dict[str, str | PortfwdError] = {}
    taken = state.take_intents(paths)
    for uuid, intent in sorted(taken.items(), key=lambda item: float(item[1].get("at") or 0)):
        name = str(intent.get("name") or "")
        try:
            if intent["op"] == state.REMOVE:
                results[uuid] = remove_locked(uuid, paths, name)
            else:
                from .actions import apply_locked, prepare

                ready = (prepared or {}).get(uuid) or prepare(str(intent.get("xml") or "").encode(), paths)
                results[uuid] = apply_locked(ready, str(intent.get("xml") or "").encode(), paths)
        except PortfwdError as exc:
            results[uuid] = exc.for_domain(name or uuid)
            pending = intent["op"] == state.REMOVE or exc.retry
            if uuid != own:
                log.error(f"{exc} ({'pending: tried again later' if pending else 'a pending change, dropped'})")
            if pending:
                continue  # whoever holds the lock next tries again
        else:
            if uuid != own:
                log.info(f"{name or uuid}: a pending change was completed: {results[uuid]}")
        state.done_intent(paths, uuid)
    return results


def carry_out_for(uuid: str, paths: Paths, prepared: dict[str, Prepared] | None = None) -> str:
    """Take the lock and carry out every pending intent; what was done for ``uuid`` (raises its
    error; the other domains' errors are logged)."""
    with state.locked(paths):
        results = carry_out(paths, prepared, own=uuid)
    result = results.get(uuid, "done meanwhile (whoever held the lock carried it out)")
    if isinstance(result, PortfwdError):
        raise result
    return result
