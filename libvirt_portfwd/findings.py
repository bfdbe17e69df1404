"""What a check found: one hop of a forward's path, whether it holds, what shows it, the fix.

Every check that explains a forward (the backends reading their rules back, ``doctor``'s host
checks, ``status``) speaks in findings, so that liveness, ``status`` and ``doctor`` are derived
from the same observations instead of each counting for itself. A finding is data: it is
printed by ``doctor`` (text or ``--json``) and never raised.
"""

from dataclasses import asdict, dataclass

OK, FAIL, WARN, INFO = "ok", "fail", "warn", "info"  # a finding's severity: fail makes a forward not work
SEVERITIES = (OK, FAIL, WARN, INFO)
FIREWALL = "firewall"  # the subject of a finding about our rules as a whole, not one domain
# A fix is a small shell snippet: command lines as they stand, ``#`` lines where no command does it.
SYNC_FIX = "libvirt-portfwd sync\n# (the service does this within a second where its service runs)"


@dataclass(frozen=True)
class Finding:
    """One observation. ``id`` is stable (documented, tested: e.g. ``sysctl.ip_forward``);
    ``subject`` names what it is about (a domain name, ``host``, a forward's claim);
    ``summary`` is one line a person reads; ``evidence`` what was seen (a value, a rule);
    ``fix`` the exact fix (a command where one does it, else what to do), empty when ok."""

    id: str
    severity: str
    subject: str
    summary: str
    evidence: str = ""
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.severity == FAIL

    def as_json(self) -> dict[str, str]:
        return asdict(self)


def firewall(id: str, severity: str, summary: str, evidence: str = "", fix: str = "") -> Finding:
    """A finding about the firewall as a whole (subject ``firewall``)."""
    return Finding(id, severity, FIREWALL, summary, evidence, fix)
