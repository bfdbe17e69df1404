"""The time bound of one hook run: our lock and every firewall command share it.

libvirt runs the hook synchronously, so a VM start waits for it. ``start(seconds)`` arms the
bound for this process (the hook does, with policy.BOUND); ``remaining(limit)`` is what a wait
may take now: ``limit`` where no bound is armed (CLI, waiter, service), else what is left of
the bound. Stdlib time only: the stop path imports this.
"""

import time

_until: float | None = None


def start(seconds: float) -> None:
    global _until
    _until = time.monotonic() + seconds


def remaining(limit: float) -> float:
    """Seconds a wait may take now, at most ``limit`` (0 once the bound is spent)."""
    if _until is None:
        return limit
    return max(0.0, min(limit, _until - time.monotonic()))


def stop() -> None:
    """No bound any more (the service, after a request it did for a hook)."""
    global _until
    _until = None
