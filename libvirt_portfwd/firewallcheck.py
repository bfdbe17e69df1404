"""The firewall hops of a forward's path, as findings: our rules (the backend reads them back),
every other table's base chain the forwarded packet passes (backends/foreign.py), and a host
process listening on a port a forward captures. doctor's checks of these hops are here too:
``check_firewall`` (host-wide), ``check_domain_rules`` (per domain), ``check_listener`` (per forward).

I/O: it reads the firewall (``iptables-save -c``, ``nft -j list ruleset``) and the listening
sockets; what they mean is decided by the pure modules. Reads only, changes nothing.
"""

from __future__ import annotations

from .backends import choose_backend
from .backends.foreign import foreign_findings
from .backends.nftables import NftablesBackend
from .errors import ConflictError, PortfwdError
from .findings import FAIL, FIREWALL, OK, WARN, Finding, firewall

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .survey import DomainView, ForwardView, Survey


def firewall_findings(
    backend_name: str, network_dir: str, live: dict[str, str], bridges: tuple[str, ...]
) -> list[Finding]:
    """``live``: uuid -> name of the domains recorded live; ``bridges``: where their guests are."""
    try:
        backend, reason = choose_backend(backend_name, network_dir)
    except PortfwdError as exc:
        return [firewall("rules.backend", FAIL, "no backend of ours can run here", str(exc), "set backend: in config")]
    found = [firewall("rules.backend", OK, f"backend {backend.name} ({reason})"), *backend.findings(live)]
    nft = NftablesBackend()
    if nft.available():
        found += foreign_findings(nft.observe(), backend.name, bridges or ("virbr0",))
    return found


AS_ROOT = "# as root:\nlibvirt-portfwd doctor"


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


def survey_firewall(survey: Survey) -> list[Finding]:
    """What Survey.firewall holds: read once for every check above."""
    config = survey.config
    backend = "auto" if isinstance(config, PortfwdError) else config.backend
    live = {r.uuid: r.name for r in survey.records if r.status == "live"}
    bridges = tuple(sorted({f.bridge for r in survey.records for f in r.forwards}))
    try:
        return firewall_findings(backend, survey.paths.network_dir, live, bridges)
    except (PortfwdError, OSError) as exc:
        return [firewall("rules.unreadable", WARN, "the firewall could not be read", str(exc), AS_ROOT)]
