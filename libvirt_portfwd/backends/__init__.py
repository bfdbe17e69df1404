"""Firewall backends: a small interface, a registry, and a selector that says what it tried."""

from __future__ import annotations

from ..errors import PortfwdError

TYPE_CHECKING = False  # typing is not imported at run time: the hook's stop path imports this
if TYPE_CHECKING:
    from .base import Backend

NAMES = ("iptables", "none")
AUTO_ORDER = ("iptables",)


def _registry() -> dict[str, Backend]:
    from .iptables import IptablesBackend
    from .none import NoneBackend

    return {"iptables": IptablesBackend(), "none": NoneBackend()}


def select_backend(name: str) -> Backend:
    """``auto`` takes the first available backend; an explicit name must be available."""
    registry = _registry()
    if name != "auto":
        backend = registry.get(name)
        if backend is None:
            raise PortfwdError("unknown backend", f"{name!r} (known: {', '.join(registry)})")
        if not backend.available():
            raise PortfwdError("backend unavailable", f"{name}: its commands are not installed")
        return backend
    for candidate in AUTO_ORDER:
        if registry[candidate].available():
            return registry[candidate]
    raise PortfwdError("no firewall backend", f"tried {', '.join(AUTO_ORDER)}: none is installed (install iptables)")


def available_backends() -> list[Backend]:
    """Every backend that can run here, the do-nothing one excluded."""
    return [b for name, b in _registry().items() if name != "none" and b.available()]
