"""``libvirt-portfwd doctor [DOMAIN] [--json]``: for each forward, hop by hop, what holds and what
does not, each finding with its id, its evidence and the exact fix. Changes nothing, ever.

The checks are three lists of small functions in the order a forwarded connection depends on
them: of the host (``HOST_CHECKS``, each ``(Survey) -> list[Finding]``), of each recorded domain
(``DOMAIN_CHECKS``, ``(DomainView) -> ...``) and of each of its forwards (``FORWARD_CHECKS``,
``(ForwardView) -> ...``); survey.py holds the three contexts, read once. A check turns what it
cannot read into a finding (``doctor.access``, as non-root) and never raises for the host's
state. A fix is a small shell snippet: lines to type as they stand, and ``#`` lines saying what
to do where no command does it. A forward is fine when no finding of the host, its domain or
its own fails; the exit code is 0 when no finding fails at all, else 1.

``--json`` prints one document (``version`` 1; every finding is ``Finding.as_json()``: id,
severity, subject, summary, evidence, fix)::

    {"version": 1, "ok": bool,
     "host": [finding, ...],
     "domains": [{"name", "uuid", "status": "live"|"waiting"|null, "pending": "apply"|"remove"|null,
                  "ok", "findings": [...],
                  "forwards": [{"forward", "proto", "address", "dev", "sources", "start", "end",
                                "guest_port", "mac", "bridge", "guest", "where", "ok",
                                "findings": [...]}]}],
     "summary": {"forwards", "fine", "not", "failing": [id, ...]}}
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from . import domainchecks, hostchecks, pathchecks
from .errors import UsageError
from .findings import FAIL, Finding
from .forward import name_problem
from .model import Forward
from .paths import Paths
from .records import encode_forward
from .survey import DomainView, ForwardView, Survey, survey

VERSION = 1

HOST_CHECKS: list[Callable[[Survey], list[Finding]]] = [
    hostchecks.check_hook,
    hostchecks.check_network_hook,
    hostchecks.check_hook_seen,
    hostchecks.check_config,
    hostchecks.check_access,
    hostchecks.check_ip_forward,
    hostchecks.check_rp_filter,
    hostchecks.check_br_netfilter,
    pathchecks.check_firewall,
]
DOMAIN_CHECKS: list[Callable[[DomainView], list[Finding]]] = [
    domainchecks.check_record,
    domainchecks.check_intent,
    pathchecks.check_domain_rules,
]
FORWARD_CHECKS: list[Callable[[ForwardView], list[Finding]]] = [
    domainchecks.check_lease,
    # (the firewall hops, ours and others', are host and domain checks: read once, above)
    pathchecks.check_listener,
    domainchecks.check_guest,
]

MARKS = {"ok": "ok", "fail": "FAIL", "warn": "warn", "info": "info"}
DETAILED = ("fail", "warn")  # severities printed with their evidence and fix


@dataclass(frozen=True)
class ForwardReport:
    forward: Forward
    findings: list[Finding]


@dataclass(frozen=True)
class DomainReport:
    view: DomainView
    findings: list[Finding]
    forwards: list[ForwardReport]


@dataclass(frozen=True)
class Report:
    host: list[Finding]
    domains: list[DomainReport]
    complete: bool = True  # every domain's recorded state was read (not so as non-root)

    def fine(self, domain: DomainReport, forward: ForwardReport) -> bool:
        return not any(f.failed for f in [*self.host, *domain.findings, *forward.findings])

    def every(self) -> list[Finding]:
        found = list(self.host)
        for domain in self.domains:
            found += domain.findings
            for forward in domain.forwards:
                found += forward.findings
        return found

    @property
    def ok(self) -> bool:
        return not any(f.failed for f in self.every())

    def counts(self) -> tuple[int, int]:
        """(forwards, fine forwards)."""
        pairs = [(d, f) for d in self.domains for f in d.forwards]
        return len(pairs), sum(self.fine(d, f) for d, f in pairs)


def examine(found: Survey) -> Report:
    """Every check, in hop order."""
    host = [finding for check in HOST_CHECKS for finding in check(found)]
    domains = []
    for view in found.domains():
        forwards = [
            ForwardReport(fv.forward, [finding for check in FORWARD_CHECKS for finding in check(fv)])
            for fv in view.forwards
        ]
        domains.append(DomainReport(view, [finding for check in DOMAIN_CHECKS for finding in check(view)], forwards))
    return Report(host, domains, complete=not found.unreadable)


def main(paths: Paths, domain: str | None, as_json: bool) -> int:
    """``doctor``: print the report (text or JSON); 0 when no finding fails, else 1."""
    if domain is not None:
        problem = name_problem(domain)
        if problem:
            raise UsageError(f"doctor: DOMAIN {problem}")
    report = examine(survey(paths, domain))
    print(render_json(report) if as_json else render_text(report), end="")
    return 0 if report.ok else 1


def render_text(report: Report) -> str:
    """Top down: the host, then each domain and each of its forwards; one line per finding, the
    evidence and the fix below a failing or warning one; a last line of the forwards' count."""
    width = max((len(f.id) for f in report.every()), default=12)
    lines = ["host", *_finding_lines(report.host, 2, width)]
    for domain in report.domains:
        view = domain.view
        lines.append(f"domain {view.name}" + (f" ({view.uuid})" if view.uuid else ""))
        lines += _finding_lines(domain.findings, 2, width)
        for forward in domain.forwards:
            lines.append(f"  forward {describe(forward.forward)}")
            lines += _finding_lines(forward.findings, 4, width)
    if not report.domains:
        lines.append("(no forwards recorded)" if report.complete else "(the recorded forwards could not be read)")
    total, fine = report.counts()
    failing = sorted({f.id for f in report.every() if f.failed})
    lines.append(
        f"{total} forward{'s' if total != 1 else ''}: {fine} fine, {total - fine} not"
        + (f"; failing: {', '.join(failing)}" if failing else "")
    )
    return "\n".join(lines) + "\n"


def _finding_lines(findings: list[Finding], indent: int, width: int) -> list[str]:
    lines = []
    for finding in findings:
        lines.append(f"{' ' * indent}{MARKS[finding.severity]:5} {finding.id:{width}}  {finding.summary}")
        if finding.severity in DETAILED:
            pad = " " * (indent + 8)
            for label, text in (("evidence", finding.evidence), ("fix", finding.fix)):
                for i, line in enumerate(text.splitlines()):
                    lines.append(f"{pad}{label if i == 0 else '':9} {line}")
    return lines


def describe(forward: Forward) -> str:
    """``tcp 203.0.113.10:20443 -> 192.168.122.178:443``, with its dev and sources if any."""
    ports = str(forward.guest_port) if forward.end == forward.start else f"{forward.guest_port}-{forward.guest_end}"
    text = f"{forward.claim} -> {forward.guest or '(no address yet)'}:{ports}"
    extra = ([f"dev {forward.dev}"] if forward.dev else []) + (
        [f"from {', '.join(str(s) for s in forward.sources)}"] if forward.sources else []
    )
    return f"{text} ({'; '.join(extra)})" if extra else text


def render_json(report: Report) -> str:
    total, fine = report.counts()
    domains = []
    for domain in report.domains:
        view = domain.view
        domains.append(
            {
                "name": view.name,
                "uuid": view.uuid,
                "status": view.record.status if view.record else None,
                "pending": view.intent.get("op") if view.intent else None,
                "ok": not any(f.failed for f in [*report.host, *domain.findings])
                and all(report.fine(domain, f) for f in domain.forwards),
                "findings": [f.as_json() for f in domain.findings],
                "forwards": [_forward_json(report, domain, f) for f in domain.forwards],
            }
        )
    document = {
        "version": VERSION,
        "ok": report.ok,
        "host": [f.as_json() for f in report.host],
        "domains": domains,
        "summary": {
            "forwards": total,
            "fine": fine,
            "not": total - fine,
            "failing": sorted({f.id for f in report.every() if f.severity == FAIL}),
        },
    }
    return json.dumps(document, sort_keys=True, indent=2) + "\n"


def _forward_json(report: Report, domain: DomainReport, forward: ForwardReport) -> dict[str, object]:
    return {
        "forward": describe(forward.forward),
        **encode_forward(forward.forward),  # as its record holds it
        "ok": report.fine(domain, forward),
        "findings": [f.as_json() for f in forward.findings],
    }
