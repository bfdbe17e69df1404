"""Exit codes of every entry point, and the hook's exit policy per operation, as data.

Stdlib only and tiny: the hook imports this on every libvirt operation, and install.sh writes
the shim's copy of ``MAY_FAIL``, ``BLOCKED`` and ``METADATA_MARK`` from here.
"""

OK = 0
FAILED = 1  # a known failure (one line on stderr and in the journal)
USAGE = 2  # a command line that makes no sense
BLOCKED = 3  # hook only: on_error: block refuses the start of a domain with forwards of ours
BROKEN = 4  # the installed runtime cannot run at all (hooks/boot.py); the shim decides alone
INTERNAL = 70  # a bug (EX_SOFTWARE): one line, the traceback in the journal
INTERRUPTED = 130  # ^C

# A hook run waits at most this long for our lock and the firewall commands together (a VM
# start waits for the hook); then it goes on as on_error says, and what it could not do stays
# pending for the next one (intents.py).
BOUND = 8.0

CHECK, APPLY, REMOVE = "check", "apply", "remove"

# operation -> (action, may this operation's failure refuse the VM's start?)
# Anything not listed does nothing and never fails (start, migrate, restore, attach, ...).
POLICY = {
    "prepare": (CHECK, True),  # only where on_error: block (see hook.py)
    "started": (APPLY, True),
    "reconnect": (APPLY, False),  # a failing reconnect hook makes libvirt kill the running VM
    "stopped": (REMOVE, False),
    "release": (REMOVE, False),
}

# The network hook acts on these operations only (put our rules back after libvirt's), never failing.
NETWORK_POLICY = ("started",)

METADATA_MARK = b"urn:libvirt-portfwd:"  # our metadata namespace, as it appears in domain XML


def action(operation: str) -> str | None:
    entry = POLICY.get(operation)
    return entry[0] if entry else None


def may_fail(operation: str) -> bool:
    entry = POLICY.get(operation)
    return bool(entry and entry[1])


def hook_exit(operation: str, code: int, blocks: "Callable[[], bool]") -> int:
    """The hook's exit code for ``operation`` whose work ended with ``code``.

    A failure refuses the start only where the operation may fail and ``blocks()`` (the admin
    asked for on_error: block, for a domain with forwards of ours); otherwise the VM goes on.
    """
    if code == OK or not may_fail(operation):
        return OK
    return BLOCKED if blocks() else OK


TYPE_CHECKING = False  # no typing import at run time (hook fast path)
if TYPE_CHECKING:
    from collections.abc import Callable
