"""Start libvirt-portfwd: ``/usr/bin/python3 -I -S hooks/boot.py KIND ARGS...``.

Every installed entry (the libvirt hooks' shim, the CLI, the services, the lease waiter) starts
here, so that whatever is broken below (a module that does not import, a dependency missing,
an interpreter of another version after a distribution upgrade) ends as one line on stderr and
in the journal and exit code BROKEN, never as a traceback. The hook shim then decides alone.

The code is the directory above this file (a checkout, or /opt/libvirt-portfwd/current, resolved
once so that a release switched meanwhile never mixes two versions); the dependencies are
Debian's (python3-lxml, -jinja2, -yaml, -libvirt). ``-S`` keeps pip's /usr/local out of the way.
Nothing here may fail: only the standard library's builtins and os.
"""

import os
import sys

BROKEN = 4  # libvirt_portfwd.policy.BROKEN
LIB = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
DEPENDENCIES = "/usr/lib/python3/dist-packages"


def main() -> int:
    sys.path.insert(0, LIB)
    if DEPENDENCIES not in sys.path:
        sys.path.append(DEPENDENCIES)
    kind, argv = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    try:
        from libvirt_portfwd import entry
    except BaseException as exc:  # anything at all: the runtime is broken
        return broken(kind, argv, exc)
    try:
        return entry.main(kind, argv)
    except SystemExit:
        raise
    except BaseException as exc:  # a bug in the entry table itself
        return broken(kind, argv, exc)


def broken(kind: str, argv: list[str], exc: BaseException) -> int:
    """One line on stderr and in syslog: what broke and the repair."""
    who = {"qemu": argv[1:3], "network": ["network", *argv[1:3]]}.get(kind, [kind])
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    line = (
        f"libvirt-portfwd: {': '.join(w for w in who if w)}: the installed runtime cannot run "
        f"({type(exc).__name__}: {exc}; Python {version}, code in {LIB}): "
        "run ./install.sh again to repair; no forward was changed"
    )
    line = " ".join(line.splitlines())
    import contextlib

    with contextlib.suppress(OSError):
        os.write(2, (line + "\n").encode(errors="replace"))
    try:  # syslog as libvirt_portfwd.log speaks it: a datagram to /dev/log (tests: under the root)
        import socket

        path = os.path.join(os.environ.get("LIBVIRT_PORTFWD_ROOT", "/"), "dev/log")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(f"<27>libvirt-portfwd[{os.getpid()}]: {line[17:]}".encode(errors="replace"), path)
    except BaseException:  # stderr has the line
        pass
    return BROKEN


if __name__ == "__main__":
    sys.exit(main())
