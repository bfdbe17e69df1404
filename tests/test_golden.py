"""Golden files: every case folder under tests/cases/ through the whole pure pipeline.

A case is a folder holding what a host holds when libvirt runs the hook at ``started``:

    domain.xml      the domain XML on the hook's stdin
    network.xml     /run/libvirt/network/default.xml (libvirt's live <networkstatus>)
    leases.status   /var/lib/libvirt/dnsmasq/virbr0.status (dnsmasq lease status JSON)
    config.yaml     /etc/libvirt-portfwd/config.yaml (optional)

and exactly one expected result:

    iptables.rules  the iptables-restore transaction against a fresh firewall
    nftables.rules  the nft -f transaction against a fresh host with libvirt's nftables table
    none.rules      what the do-nothing backend writes (nothing)
    error.txt       the one-line message, where the case must be refused

Under ``backend: auto`` (the default) a case has the rulesets of both backends auto can choose;
a config that names a backend has that backend's alone, and it must be what auto renders for
that backend from the same inputs. A missing or unexpected golden file fails.
``REGEN_GOLDEN=1 pytest tests/test_golden.py`` rewrites them; review the diff before committing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from libvirt_portfwd import names
from libvirt_portfwd.actions import Prepared, prepare
from libvirt_portfwd.backendnames import AUTO, BACKENDS, FIREWALLS
from libvirt_portfwd.backends import nftables_rules
from libvirt_portfwd.backends.iptables_rules import Observed, render_change, render_rebuild
from libvirt_portfwd.backends.none import NoneBackend
from libvirt_portfwd.errors import PROG, PortfwdError
from libvirt_portfwd.network import load_networks
from libvirt_portfwd.paths import Paths
from libvirt_portfwd.plan import Plan

TESTS = Path(__file__).resolve().parent
CASES = TESTS / "cases"
GOLDEN = TESTS / "golden"
ERROR_FILE = "error.txt"
INPUTS = ("domain.xml", "network.xml", "leases.status")
# Where each case input lives on a real host (under the temporary root).
LAYOUT = {
    "network.xml": "run/libvirt/network/default.xml",
    "leases.status": "var/lib/libvirt/dnsmasq/virbr0.status",
    "config.yaml": "etc/libvirt-portfwd/config.yaml",
}


def fresh_firewall() -> dict[str, Observed]:
    """What observe_chains() reads on a host where we never ran: no jumps, no dispatch chain."""
    return {t: Observed(hook_rules=(), dispatch_rules=None) for t in ("nat", "filter")}


def render_iptables(plan: Plan) -> str:
    return render_change(plan.uuid, plan, 0, fresh_firewall())


def render_nftables(plan: Plan) -> str:
    """On a host whose libvirt uses nftables and where we never ran: the gate goes in too."""
    return nftables_rules.render_change(plan, LIBVIRT_NFT_NO_GATE)


LIBVIRT_NFT_NO_GATE = nftables_rules.Gate(present=True, ok=False)


def render_none(plan: Plan) -> str:
    return NoneBackend().change(plan, 0)


# Every backend by its name (test_every_backend_has_a_golden_renderer: the registry's names).
RENDERERS: dict[str, Callable[[Plan], str]] = {
    "iptables": render_iptables,
    "nftables": render_nftables,
    "none": render_none,
}


def golden_of(backend: str) -> str:
    return f"{backend}.rules"


GOLDENS = [golden_of(backend) for backend in RENDERERS]


def rendered_by(backend: str) -> tuple[str, ...]:
    """The backends whose rulesets a case under ``backend:`` has: auto's choices, or the one named."""
    return FIREWALLS if backend == AUTO else (backend,)


def regenerating() -> bool:
    return os.environ.get("REGEN_GOLDEN", "") not in ("", "0")


def case_names() -> list[str]:
    names = sorted(p.name for p in CASES.iterdir() if p.is_dir()) if CASES.is_dir() else []
    return names or ["(no cases found)"]  # an empty tests/cases/ fails, it does not skip


def install_case(case: Path, root: Path) -> Paths:
    """Lay the case out like the system under ``root``; return the Paths for that root."""
    for name, target in LAYOUT.items():
        if (case / name).is_file():
            (root / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(case / name, root / target)
    return Paths(root=str(root))


def run_case(case: Path, root: Path) -> Prepared:
    paths = install_case(case, root)
    return prepare((case / "domain.xml").read_bytes(), paths)


def one_line(exc: PortfwdError, root: Path) -> str:
    """The message as a user sees it, with the temporary root taken out of paths."""
    return str(exc).replace(str(root), "")


def compare(golden: Path, actual: str) -> None:
    """Compare with the golden file; write it instead under REGEN_GOLDEN=1."""
    if regenerating():
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual)
        return
    if not golden.is_file():
        pytest.fail(f"missing golden file {golden.relative_to(TESTS)}; run REGEN_GOLDEN=1 pytest {__file__}")
    assert actual == golden.read_text(), f"{golden.relative_to(TESTS)} differs (REGEN_GOLDEN=1 rewrites it)"


def forbid(case: Path, *names: str, why: str = "") -> None:
    """A case has one kind of result, rules or an error: the other kind's files must not exist
    (nor the rulesets of backends its config does not render for: ``why`` says so)."""
    for name in names:
        if regenerating():
            (case / name).unlink(missing_ok=True)
        elif (case / name).exists():
            why = why or f"the case {'succeeds' if name == ERROR_FILE else 'fails'}"
            pytest.fail(f"{case.name}: has {name}, but {why}")


@pytest.mark.parametrize("name", case_names())
def test_case(name: str, tmp_path: Path) -> None:
    case = CASES / name
    missing = [n for n in INPUTS if not (case / n).is_file()]
    assert not missing, f"case {name} lacks {', '.join(missing)}"
    root = tmp_path / "root"
    try:
        prepared = run_case(case, root)
    except PortfwdError as exc:
        message = one_line(exc, root)
        assert message.startswith(f"{PROG}: ") and "\n" not in message, message
        forbid(case, *GOLDENS)
        compare(case / ERROR_FILE, message + "\n")
        return
    plan = prepared.plan
    assert plan.forwards, f"{name}: the case declares no forward"
    assert not plan.waiting_macs, f"{name}: no address for {plan.waiting_macs} (add a lease or reservation)"
    if not regenerating() and (case / ERROR_FILE).exists():
        pytest.fail(f"{name}: expected {(case / ERROR_FILE).read_text().strip()!r}, but the case succeeded")
    forbid(case, ERROR_FILE)
    backends = rendered_by(prepared.config.backend)
    others = [golden_of(b) for b in RENDERERS if b not in backends]
    forbid(case, *others, why=f"its config renders for {', '.join(backends)} only")
    for backend in backends:
        compare(case / golden_of(backend), RENDERERS[backend](plan))


def test_every_backend_has_a_golden_renderer() -> None:
    assert tuple(RENDERERS) == BACKENDS


def explicit_backend_cases() -> list[str]:
    """The cases whose config names a backend other than auto (none found fails, as above)."""
    names = [n for n in case_names() if config_document(CASES / n).get("backend", AUTO) != AUTO]
    return names or ["(no case names a backend)"]


def config_document(case: Path) -> dict[str, object]:
    path = case / "config.yaml"
    document = yaml.safe_load(path.read_text()) if path.is_file() else None
    return document if isinstance(document, dict) else {}


@pytest.mark.parametrize("name", explicit_backend_cases())
def test_a_named_backend_renders_what_auto_renders_for_it(name: str, tmp_path: Path) -> None:
    """The same inputs without the backend key (auto) on the case's host, where auto would take
    the backend named: the same plan, and the named backend's golden is exactly that backend's
    rendering of it (for none: nothing)."""
    case = CASES / name
    document = config_document(case)
    backend = document.pop("backend")
    assert backend in BACKENDS, f"{name}: backend {backend!r}"
    named = run_case(case, tmp_path / "named")
    auto_case = tmp_path / "auto"
    shutil.copytree(case, auto_case)
    (auto_case / "config.yaml").write_text(yaml.safe_dump(document))
    auto = run_case(auto_case, tmp_path / "auto-root")
    assert (auto.config.backend, named.config.backend) == (AUTO, backend)
    assert auto.plan == named.plan
    assert RENDERERS[backend](auto.plan) == (case / golden_of(backend)).read_text()
    if backend in FIREWALLS:  # libvirt's firewall on the case's host, as auto reads it
        networks = load_networks(Paths(root=str(tmp_path / "auto-root")).network_dir)
        assert {n.firewall or "iptables" for n in networks.values()} == {backend}


def test_cases_are_laid_out_as_on_a_host(tmp_path: Path) -> None:
    """The harness itself: inputs land where Paths looks for them."""
    paths = install_case(CASES / "explicit-guest-address", tmp_path)
    assert Path(paths.config).read_text() == (CASES / "explicit-guest-address" / "config.yaml").read_text()
    assert Path(paths.network_dir, "default.xml").is_file()
    assert Path(paths.dnsmasq_dir, "virbr0.status").is_file()
    assert paths.config_cache.startswith(str(tmp_path))


def plans_of(tmp_path: Path, *names: str) -> list[Plan]:
    return [run_case(CASES / name, tmp_path / name).plan for name in names]


def test_rebuild_two_domains(tmp_path: Path) -> None:
    """sync's transaction for two running domains, against a fresh firewall."""
    plans = plans_of(tmp_path, "tcp-single", "udp-range")
    compare(GOLDEN / "rebuild-two-domains.iptables.rules", render_rebuild(plans, fresh_firewall()))


def test_rebuild_removes_stale_chain(tmp_path: Path) -> None:
    """A chain of a domain that stopped while we were not looking is emptied and deleted."""
    plans = plans_of(tmp_path, "tcp-single")
    stale = names.domain_chain("01234567-89ab-cdef-0123-456789abcdef")
    observed = {
        "nat": Observed(
            hook_rules=("-A PREROUTING -m comment --comment libvirt-portfwd -j PORTFWD",),
            dispatch_rules=(),
            chains=frozenset({stale}),
        ),
        "filter": Observed(
            hook_rules=("-A FORWARD -m comment --comment libvirt-portfwd -j PORTFWD",),
            dispatch_rules=(),
            chains=frozenset({stale}),
        ),
    }
    compare(GOLDEN / "rebuild-stale-chain.iptables.rules", render_rebuild(plans, observed))


def test_rebuild_with_nothing_left_removes_our_chains() -> None:
    compare(GOLDEN / "rebuild-empty.iptables.rules", render_rebuild([], fresh_firewall()))


def test_nftables_rebuild_and_removal(tmp_path: Path) -> None:
    """sync's nft transaction for two domains; one domain's removal; the last removal."""
    plans = plans_of(tmp_path, "tcp-single", "source-restricted")
    compare(GOLDEN / "rebuild-two-domains.nftables.rules", nftables_rules.render_rebuild(plans, LIBVIRT_NFT_NO_GATE))
    compare(GOLDEN / "removal-other.nftables.rules", nftables_rules.render_removal(plans[1], None, last=False))
    gate = nftables_rules.Gate(present=True, ok=True, handles=(42,))
    compare(GOLDEN / "removal-last.nftables.rules", nftables_rules.render_removal(plans[1], gate, last=True))
