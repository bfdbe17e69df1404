"""The installed hooks: hooks/shim.sh with this installation's values (install.sh, tests).

``boot.py shim KIND CONFIG`` prints the shim for ``KIND`` (qemu or network); the values that
the shim must know without Python (which operations may fail, the exit codes, our metadata
mark) come from policy.py, so that they are written once.
"""

import os
import sys

from . import policy
from .errors import UsageError

LIB = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("qemu", "network")
MARKER = "managed-by: libvirt-portfwd"  # in every file install.sh writes (its MARKER); it overwrites no other


def render(kind: str, config: str, lib: str = LIB) -> str:
    """The shim for ``kind``; ``config`` "" means the default path (tests: under the root)."""
    if kind not in KINDS:
        raise UsageError(f"shim KIND CONFIG: KIND is one of {', '.join(KINDS)}, got {kind!r}")
    for value in (config, lib):
        if any(c in value for c in "'\"$`\\\n "):
            raise UsageError(f"shim: a path with quotes, spaces or shell characters: {value!r}")
    with open(os.path.join(LIB, "hooks", "shim.sh"), encoding="utf-8") as handle:
        text = handle.read()
    values = {
        "KIND": kind,
        "BOOT": os.path.join(lib, "hooks", "boot.py"),
        "CONFIG": config,
        "ACTIVE": " ".join(policy.POLICY if kind == "qemu" else policy.NETWORK_POLICY),
        "MAY_FAIL": " ".join(op for op in policy.POLICY if policy.may_fail(op)),
        "BLOCKED": str(policy.BLOCKED),
        "BROKEN": str(policy.BROKEN),
        "MARK": policy.METADATA_MARK.decode(),
    }
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def main(argv: list[str]) -> int:
    """``shim KIND CONFIG [LIB]``: LIB is where the shim finds hooks/boot.py (install.sh: the
    ``current`` link, so that one rename switches every entry to a new release)."""
    if len(argv) not in (2, 3):
        raise UsageError("shim KIND CONFIG [LIB]")
    sys.stdout.write(render(*argv))
    return 0
