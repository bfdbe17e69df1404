"""The one error boundary every entry point runs its work in (hook, network hook, CLI, waiter,
service).

A known failure (PortfwdError, or the system refusing: OSError) is one line and FAILED; a module
or dependency that does not import (a broken installation, an upgrade half done) is one line
with the repair and BROKEN; a bug is one line, its traceback in the journal, and INTERNAL; ^C
is INTERRUPTED. The hook maps
these codes through its policy (policy.hook_exit). Stdlib only until an entry is imported.
"""

from .errors import PROG, PortfwdError, UsageError
from .policy import BROKEN, FAILED, INTERNAL, INTERRUPTED, USAGE

TYPE_CHECKING = False  # no typing import at run time (hook fast path)
if TYPE_CHECKING:
    from collections.abc import Callable


def guarded(work: "Callable[[], int]", *, domain: str = "", what: str = "") -> int:
    """Run ``work``; turn whatever it raises into one line and an exit code."""
    from . import log

    try:
        return work()
    except UsageError as exc:
        log.error(f"usage: {exc} (see --help)")
        return USAGE
    except PortfwdError as exc:
        log.error(str(exc.for_domain(domain)))
        return FAILED
    except OSError as exc:  # the system refused (read-only or full run dir, a missing file, ...)
        where = f" ({exc.filename})" if exc.filename else ""
        log.error(f"{_prefix(domain, what)}system error{where}: {exc.strerror or exc}")
        return FAILED
    except (ImportError, SyntaxError) as exc:
        import sys

        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        log.error(
            f"{_prefix(domain, what)}the installed runtime cannot run ({type(exc).__name__}: {exc}; "
            f"Python {version}): run ./install.sh again to repair"
        )
        return BROKEN
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception as exc:
        import traceback

        log.error(
            f"{_prefix(domain, what)}internal error: {type(exc).__name__}: {exc} "
            f"(a bug; its traceback is in the journal: journalctl -t {PROG})"
        )
        log.trace(traceback.format_exc())
        return INTERNAL


def _prefix(domain: str, what: str) -> str:
    return "".join(f"{part}: " for part in (domain, what) if part)
