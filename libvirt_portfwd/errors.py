"""Error types and the one message shape every entrypoint prints.

``libvirt-portfwd: <domain>: <what failed> (<where>): <why>``
"""

PROG = "libvirt-portfwd"
SHOWN_MAX = 60  # characters of a value quoted in a message


def label(text: str) -> str:
    """A name in a message's <where> (a config key): as written, but bounded."""
    return text if len(text) <= SHOWN_MAX else f"{text[:SHOWN_MAX]}..."


def shown(value: object) -> str:
    """A value as a message quotes it: repr, one line, bounded (a 5,000-digit port, a 1 MB
    attribute or an expanded YAML alias must not make the message, or its making, huge)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<an integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    if isinstance(value, (str, bytes)) and len(value) > SHOWN_MAX:
        return f"{value[:SHOWN_MAX]!r}... ({len(value)} characters)"
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        import reprlib

        brief = reprlib.Repr()
        brief.maxlevel, brief.maxlist, brief.maxtuple, brief.maxdict, brief.maxset = 2, 4, 4, 4, 4
        brief.maxstring = brief.maxother = 24
        brief.repr_int = lambda x, level: shown(x)  # type: ignore[method-assign,assignment]
        text = brief.repr(value)
    else:
        text = repr(value)
    return text if len(text) <= 2 * SHOWN_MAX else f"{text[: 2 * SHOWN_MAX]}..."


class PortfwdError(Exception):
    """A known failure: reported as one line, never as a traceback."""

    def __init__(self, what: str, why: str, *, domain: str = "", where: str = "", retry: bool = False) -> None:
        super().__init__(why)
        self.what = what
        self.why = why
        self.domain = domain
        self.where = where
        self.retry = retry  # it may pass by waiting (the lock, a timeout): try again later

    def for_domain(self, domain: str) -> "PortfwdError":
        """Name the domain, unless a more precise one is already named."""
        if not self.domain:
            self.domain = domain
        return self

    def __str__(self) -> str:
        parts = [PROG]
        if self.domain:
            parts.append(self.domain)
        what = f"{self.what} ({self.where})" if self.where else self.what
        parts.append(f"{what}: {self.why}")
        return " ".join(": ".join(parts).splitlines())  # one line, whatever the input held


class InputError(PortfwdError):
    """Bad input: domain XML, metadata, config or command line."""


class ConflictError(PortfwdError):
    """Two forwards claim the same host address, protocol and port."""


class FirewallError(PortfwdError):
    """A firewall command failed; the firewall is as it was before."""

    def __init__(self, argv: list[str], returncode: int, stderr: str, *, domain: str = "") -> None:
        first = stderr.strip().splitlines()[0] if stderr.strip() else f"exit code {returncode}"
        super().__init__(f"{argv[0]} failed", first, domain=domain, where=f"exit {returncode}", retry=returncode < 0)
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class UsageError(Exception):
    """A command line that makes no sense (exit 2)."""
