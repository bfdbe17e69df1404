"""``libvirt-portfwd``: hook, plan, apply, remove, status, doctor, sync, serve.

Exit codes (policy.py): 0 ok, 1 a known failure (one line), 2 usage, 70 a bug (one line, the
traceback in the journal), 130 ^C; ``hook`` exits as the hook does.
"""

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

from . import limits
from .backendnames import CHOICES
from .boundary import guarded
from .errors import PortfwdError, UsageError
from .paths import Paths

if TYPE_CHECKING:
    from typing import NoReturn

    from .backends.base import Backend
    from .plan import Plan
    from .report import StatusResult

DEFAULT_URI = "qemu:///system"
JSON_HELP = "print one JSON document instead (its keys: README, JSON output)"


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (UsageError), not a usage screen."""

    def error(self, message: str) -> "NoReturn":
        raise UsageError(f"{self.prog}: {message}")


def main(argv: list[str] | None = None) -> int:
    return guarded(lambda: _main(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("serve", "watch"):
        from .service import main as serve_main

        return serve_main(
            [
                *(["--config", args.config] if args.config else []),
                *(["--root", args.root] if args.root else []),
                *(["--period", str(args.period)] if args.period is not None else []),
                *(["--no-socket"] if args.no_socket else []),
            ]
        )
    if args.command == "hook":
        from .hook import main as hook_main

        return hook_main([args.domain, args.operation, args.suboperation, args.extra], args.config)
    from . import render

    paths = Paths(root=args.root, config=args.config)
    render.use_cache(paths.run_dir)
    return int(args.run(args, paths))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="libvirt-portfwd", description="Port forwards that follow the libvirt VM lifecycle.")
    parser.add_argument("--config", help="config file (default /etc/libvirt-portfwd/config.yaml)")
    parser.add_argument("--root", help="prefix for every system path (testing; default /)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    hook = commands.add_parser("hook", help="run exactly as libvirt runs the hook (domain XML on stdin)")
    hook.add_argument("domain")
    hook.add_argument("operation")
    hook.add_argument("suboperation", nargs="?", default="-")
    hook.add_argument("extra", nargs="?", default="-")

    plan = commands.add_parser("plan", help="print the ruleset a start would apply; changes nothing")
    plan.add_argument("xml", help="domain XML file, or - for stdin")
    plan.add_argument("--backend", choices=CHOICES, help="render for this backend instead of the configured one")
    plan.add_argument("--json", action="store_true", help=JSON_HELP)
    plan.set_defaults(run=cmd_plan)

    apply = commands.add_parser("apply", help="apply a running domain's forwards now (asks libvirt for its XML)")
    apply.add_argument("domain", help="domain name or UUID")
    apply.add_argument("--connect", default=DEFAULT_URI, help=f"libvirt URI (default {DEFAULT_URI})")
    apply.set_defaults(run=cmd_apply)

    remove = commands.add_parser("remove", help="remove a domain's forwards now (from the recorded state)")
    remove.add_argument("domain", nargs="?", help="domain name or UUID")
    remove.add_argument("--all", action="store_true", help="remove every forward of every domain (uninstall)")
    remove.set_defaults(run=cmd_remove)

    status = commands.add_parser("status", help="each domain's forwards, guest address, and whether they are live")
    status.add_argument("--json", action="store_true", help=JSON_HELP)
    status.set_defaults(run=cmd_status)

    doctor = commands.add_parser(
        "doctor", help="check every forward hop by hop: what holds, what does not, the fix (changes nothing)"
    )
    doctor.add_argument("domain", nargs="?", help="only this domain (name or UUID)")
    doctor.add_argument("--json", action="store_true", help="one JSON document instead of text")
    doctor.set_defaults(run=cmd_doctor)

    serve = commands.add_parser(
        "serve",
        aliases=["watch"],  # its name before issue 14: a unit of an older release still starts it
        help="the resident service: follows the firewall and the guests' addresses, takes the hooks' work",
    )
    serve.add_argument("--period", type=float, help="seconds between its checks of the firewall (default 30)")
    serve.add_argument("--no-socket", action="store_true", help="take no hook's work: every hook does its own")

    sync = commands.add_parser("sync", help="reconcile the rules with the running domains (after a reboot or flush)")
    sync.add_argument("--connect", default=DEFAULT_URI, help=f"libvirt URI (default {DEFAULT_URI})")
    sync.set_defaults(run=cmd_sync)
    return parser


def cmd_plan(args: argparse.Namespace, paths: Paths) -> int:
    from .actions import check_host_ports, prepare
    from .backends import choose_backend
    from .report import BackendChoice, PlanResult, render

    data = sys.stdin.buffer.read(limits.DOMAIN_XML.value + 1) if args.xml == "-" else _read(args.xml)
    prepared = prepare(data, paths, where=args.xml if args.xml != "-" else "stdin")
    plan = prepared.plan
    check_host_ports(plan, prepared.config)  # as a start would refuse it: before anything is printed
    backend, reason = choose_backend(args.backend or prepared.config.backend, paths.network_dir)
    ruleset = _render_plan(backend, plan) if plan.forwards and not plan.waiting_macs else None
    sys.stdout.write(render(PlanResult(plan, BackendChoice(backend.name, reason), ruleset), args.json))
    return 0


def _render_plan(backend: "Backend", plan: "Plan") -> str:
    """Against the live firewall when we may read it (root), else against an empty one."""
    from .backends.iptables import IptablesBackend
    from .backends.iptables_rules import Observed, render_change
    from .backends.nftables import NftablesBackend
    from .backends.nftables_rules import Gate
    from .backends.nftables_rules import render_change as render_nft_change

    if os.geteuid() != 0:
        if isinstance(backend, IptablesBackend):
            empty = {t: Observed(hook_rules=(), dispatch_rules=None) for t in ("nat", "filter")}
            return render_change(plan.uuid, plan, 0, empty)
        if isinstance(backend, NftablesBackend):
            return render_nft_change(plan, Gate(present=False, ok=True))
    return backend.change(plan, 0)


def cmd_apply(args: argparse.Namespace, paths: Paths) -> int:
    from .intents import apply

    name, _uuid, xml = _lookup(args.connect, args.domain)
    print(f"{name}: {apply(xml, paths)}")
    return 0


def cmd_remove(args: argparse.Namespace, paths: Paths) -> int:
    from .intents import remove
    from .records import load_records
    from .teardown import remove_all

    if args.all == bool(args.domain):
        raise UsageError("remove takes a domain or --all")
    if args.all:
        print(f"removed the forwards of {remove_all(paths)} domain(s)")
        return 0
    record = next((r for r in load_records(paths) if args.domain in (r.name, r.uuid)), None)
    if record is None:
        print(f"{args.domain}: nothing recorded")
        return 0
    print(f"{record.name}: {remove(record.uuid, paths, record.name)}")
    return 0


def cmd_status(args: argparse.Namespace, paths: Paths) -> int:
    from .report import render

    sys.stdout.write(render(_collect_status(paths, time.time()), args.json))
    return 0


def _collect_status(paths: Paths, now: float) -> "StatusResult":
    from . import state
    from .backends import choose_backend, select_backend
    from .config import load_config
    from .records import load_records
    from .report import BackendChoice, DomainStatus, Pending, StatusResult

    try:
        backend, reason = choose_backend(load_config(paths.config, paths.config_cache).backend, paths.network_dir)
        choice = BackendChoice(backend.name, reason)
    except PortfwdError as exc:
        choice = BackendChoice(None, None, str(exc))
    live: dict[str, set[str]] = {}
    domains = []
    for record in load_records(paths):
        if record.status == state.LIVE and record.backend not in live:
            live[record.backend] = select_backend(record.backend, where=paths.record(record.uuid)).live()
        is_live = record.uuid in live[record.backend] if record.status == state.LIVE else None
        domains.append(DomainStatus(record.name, record.uuid, record.shown_status, tuple(record.forwards), is_live))
    pending = []
    for uuid, intent in sorted(state.pending_intents(paths).items()):
        op = state.REMOVE if intent.get("op") == state.REMOVE else state.APPLY
        age = round(max(0.0, now - float(intent.get("at") or 0)))
        pending.append(Pending(uuid, str(intent.get("name") or "") or None, op, age))
    return StatusResult(choice, tuple(domains), tuple(pending))


def cmd_doctor(args: argparse.Namespace, paths: Paths) -> int:
    from . import doctor

    return doctor.main(paths, args.domain, args.json)


def cmd_sync(args: argparse.Namespace, paths: Paths) -> int:
    from .reconcile import sync

    running = _running_domains(args.connect)
    errors = sync(paths, running)
    from . import log

    for error in errors:
        log.error(str(error))
    return 1 if errors else 0


def _read(path: str) -> bytes:
    try:
        return limits.read_file(path, limits.DOMAIN_XML, "domain XML")
    except FileNotFoundError as exc:
        raise PortfwdError("cannot read domain XML", exc.strerror or str(exc), where=path) from None


def _connect(uri: str):  # type: ignore[no-untyped-def]
    try:
        import libvirt
    except ImportError:
        raise PortfwdError("libvirt-python is not installed", "needed to ask libvirt for domains") from None
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are ours to report, once
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise PortfwdError("cannot connect to libvirt", str(exc), where=uri) from None


def _lookup(uri: str, domain: str) -> tuple[str, str, bytes]:
    import libvirt

    conn = _connect(uri)
    try:
        try:
            dom = conn.lookupByUUIDString(domain) if len(domain) == 36 else conn.lookupByName(domain)
        except libvirt.libvirtError as exc:
            raise PortfwdError("no such domain", str(exc), domain=domain) from None
        if not dom.isActive():
            raise PortfwdError("domain is not running", "start it first", domain=domain)
        return dom.name(), dom.UUIDString(), dom.XMLDesc(0).encode()
    finally:
        conn.close()


def _running_domains(uri: str) -> dict[str, bytes]:
    import libvirt

    conn = _connect(uri)
    try:
        return {
            d.UUIDString(): d.XMLDesc(0).encode() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        }
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
