"""doctor's checks of the firewall hops (read once, on the Survey: firewallcheck.py) and of a
host process listening on a port a forward captures: ``check_firewall`` (host-wide),
``check_domain_rules`` (per domain), ``check_listener`` (per forward)."""

from __future__ import annotations

from .errors import ConflictError, PortfwdError
from .findings import FAIL, FIREWALL, OK, Finding
from .survey import DomainView, ForwardView, Survey


def check_firewall(survey: Survey) -> list[Finding]:
    """The firewall as a whole: the backend and why, our rules, the other tables on the path."""
    return [f for f in survey.firewall if f.subject == FIREWALL]


def check_domain_rules(view: DomainView) -> list[Finding]:
    """A live domain's own rules: reached or not, and its counters (where they are kept)."""
    if view.record is None or view.record.status != "live":
        return []
    return [f for f in view.survey.firewall if f.subject == view.name]


def check_listener(fv: ForwardView) -> list[Finding]:
    """A host process listening on a port the forward captures: the next start refuses it."""
    from .model import Plan
    from .plan import check_listeners

    survey = fv.survey
    config = survey.config
    if isinstance(config, PortfwdError) or isinstance(survey.listeners, PortfwdError):
        return []
    plan = Plan(fv.domain.name, fv.domain.uuid, (fv.forward,))
    try:
        check_listeners(plan, survey.listeners, config, survey.owner)
    except ConflictError as exc:
        fix = f"# {exc.why.split(': ', 1)[-1]}; then: libvirt-portfwd apply {fv.domain.name}"
        summary = "a host process listens on a port this forward takes: its next start refuses it"
        return [Finding("host.listener", FAIL, fv.subject, summary, exc.why, fix)]
    return [Finding("host.listener", OK, fv.subject, "no host process listens on its ports")]
