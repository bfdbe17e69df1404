"""The entry points hooks/boot.py starts: ``KIND ARGS...``. Each entry guards its own work
(boundary.py); a module that does not even import is boot.py's to report."""

from .boundary import guarded
from .policy import USAGE


def main(kind: str, argv: list[str]) -> int:
    """hooks/boot.py's entry: ``KIND ARGS...``; each entry guards its own work."""
    if kind in ("qemu", "network"):  # the shim passes the config path first ("" = default)
        from . import hook

        entry = hook.main if kind == "qemu" else hook.main_network
        return entry(argv[1:], argv[0] or None)
    if kind == "cli":
        from . import cli

        return cli.main(argv)
    if kind == "waiter":
        from . import waiter

        return waiter.main(argv)
    if kind == "check":
        from . import selfcheck

        return guarded(lambda: selfcheck.check(argv), what="self-check")
    if kind == "shim":
        from . import shim

        return guarded(lambda: shim.main(argv), what="shim")
    from . import log

    log.error(f"usage: unknown entry point {kind!r} (qemu, network, cli, waiter, check, shim)")
    return USAGE
