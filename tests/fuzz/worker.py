"""One fuzz worker: ``python -m tests.fuzz.worker ROOT SECRET_PATH SEED`` reads jobs (length-prefixed
pickles of ``(family, index)``) on stdin, makes each case with the seeded generator (the same case
the parent would make), and answers with its outcome on stdout, until stdin closes.

It runs as nobody with an address-space limit (tests/fuzz/pool.py starts it so) and sets its own
CPU limit before every case (RLIMIT_CPU counts the whole process: the soft limit is moved to
what it has used plus CPU_PER_CASE), so a case that spins is killed by SIGXCPU and one that
swells gets a MemoryError, each reported as that case's failure.

A case runs the pipeline as ``plan`` does, in process, against files under ROOT: parse the
domain XML, read the host (config, networks, leases), plan, and render both backends' change
against a fresh firewall (``cli`` cases run ``cli.main`` itself). The stage it reached, its one
error line, what it rendered and everything it printed go back; a traceback is a failure.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import resource
import shutil
import struct
import sys
import traceback
from pathlib import Path
from typing import Any, BinaryIO

from tests.fuzz.inputs import Case, Context, File, Generator

CPU_PER_CASE = 10  # seconds of CPU one case may use
HEADER = struct.Struct("!I")


def send(stream: BinaryIO, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def receive(stream: BinaryIO) -> Any:
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    return pickle.loads(stream.read(size))


def materialize(root: Path, case: Case, secret_path: str) -> None:
    """The case's files under a fresh ROOT (and the cli case's named arguments under ROOT/args)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for relative, file in case.files.items():
        place(root / relative, file, secret_path)
    if case.argv is not None:
        args = root / "args"
        for name, file in ARGUMENT_FILES.items():
            place(args / name, file, secret_path)
        place(args / "domain.xml", File(data=case.domain), secret_path)


def place(path: Path, file: File, secret_path: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if file.kind == "bytes":
        path.write_bytes(file.data)
    elif file.kind == "dir":
        path.mkdir()
    elif file.kind == "fifo":
        os.mkfifo(path)
    elif file.kind == "devlink":
        path.symlink_to("/dev/zero")
    elif file.kind == "secretlink":
        path.symlink_to(secret_path)
    else:
        assert file.kind == "missing", file.kind


# The names a cli case's command line may use, and what lies there.
ARGUMENT_FILES = {
    "config.yaml": File(data=b"on_error: block\n"),
    "dir": File(kind="dir"),
    "fifo": File(kind="fifo"),
    "devlink": File(kind="devlink"),
    "huge.xml": File(data=b"<domain>" + b" " * (4 * 1024 * 1024 + 1) + b"</domain>"),
}


def run_pipeline(case: Case, root: Path) -> dict[str, Any]:
    from libvirt_portfwd.actions import describe, read_host
    from libvirt_portfwd.backends import iptables_rules, nftables_rules
    from libvirt_portfwd.domain import parse_domain
    from libvirt_portfwd.errors import PortfwdError
    from libvirt_portfwd.paths import Paths
    from libvirt_portfwd.plan import build_plan, collect_specs

    outcome: dict[str, Any] = {"stage": "none", "message": None, "rulesets": {}, "outputs": []}
    try:
        domain = parse_domain(case.domain, "stdin")
        host = read_host(Paths(root=str(root)))
        outcome["stage"] = "parsed"
        plan = build_plan(domain, collect_specs(domain, host.config), host.config, host.networks, host.leases)
        outcome["stage"] = "planned"
        outcome["outputs"].append(f"# domain {plan.name} ({plan.uuid})\n# {describe(plan)}\n")
        if plan.forwards and not plan.waiting_macs:
            fresh = {t: iptables_rules.Observed(hook_rules=(), dispatch_rules=None) for t in iptables_rules.TABLES}
            outcome["rulesets"] = {
                "iptables": iptables_rules.render_change(plan.uuid, plan, 0, fresh),
                "nftables": nftables_rules.render_change(plan, nftables_rules.Gate(present=True, ok=False)),
            }
            outcome["stage"] = "rendered"
    except PortfwdError as exc:
        outcome["message"] = str(exc)
    return outcome


def run_cli(case: Case, root: Path) -> dict[str, Any]:
    """``libvirt-portfwd --root ROOT ARGV`` in process, as nobody: plan renders against an empty
    firewall. Only ``plan`` is run; any other command line only goes as far as argparse."""
    from libvirt_portfwd import cli, log
    from libvirt_portfwd.errors import UsageError

    assert case.argv is not None
    argv = [
        "--root",
        str(root),
        *(str(root / "args" / a) if a in (*ARGUMENT_FILES, "domain.xml", "missing.xml") else a for a in case.argv),
    ]
    outcome: dict[str, Any] = {"stage": "none", "message": None, "rulesets": {}, "outputs": [], "code": None}
    try:
        args = cli._parser().parse_args(argv)
    except UsageError:
        args = None
    except SystemExit:  # --help
        args = None
    if args is not None:
        outcome["stage"] = "parsed"
        if args.command != "plan":
            return outcome
    traces: list[str] = []
    log.trace = traces.append  # type: ignore[assignment]  # a bug's traceback: ours to report
    out, err = io.StringIO(), io.StringIO()
    stdin = io.TextIOWrapper(io.BytesIO(case.domain))
    old_stdin, sys.stdin = sys.stdin, stdin
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse's --help
                code = exc.code if isinstance(exc.code, int) else 0
    finally:
        sys.stdin = old_stdin
    outcome["code"] = code
    outcome["outputs"] += [out.getvalue(), err.getvalue()]
    if traces:
        outcome["failure"] = traces[0]
    if code == 0 and args is not None:
        outcome["stage"] = "planned"
        header = out.getvalue().split("\n", 1)[0]
        rules = "".join(line + "\n" for line in out.getvalue().splitlines() if not line.startswith("#"))
        if rules:
            outcome["stage"] = "rendered"
            outcome["rulesets"] = {header.split(", backend ", 1)[1].split()[0]: rules}
    elif code != 0:
        outcome["message"] = err.getvalue().removesuffix("\n")
    return outcome


def run_case(case: Case, root: Path, secret_path: str) -> dict[str, Any]:
    used = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(used.ru_utime + used.ru_stime) + CPU_PER_CASE
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    try:
        materialize(root, case, secret_path)
        return run_cli(case, root) if case.argv is not None else run_pipeline(case, root)
    except MemoryError:
        return {"stage": "none", "failure": "memory: MemoryError (over the worker's address-space limit)", "exit": True}
    except BaseException:
        return {"stage": "none", "failure": traceback.format_exc()}


def main() -> int:
    root, secret_path, seed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    generator = Generator(seed, Context(secret="", secret_path=secret_path))
    # the protocol keeps the real descriptors; the code under test sees /dev/null for 0 and 1
    requests, replies = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.environ["LIBVIRT_PORTFWD_ROOT"] = str(root)  # syslog goes to ROOT/dev/log: nobody listens
    import libvirt_portfwd.actions
    import libvirt_portfwd.render

    libvirt_portfwd.render.environment()
    while True:
        job = receive(requests)
        if job is None:
            return 0
        case = generator.case(*job)
        outcome = run_case(case, root, secret_path)
        outcome["what"] = case.what
        send(replies, outcome)
        if outcome.get("exit"):
            return 1


if __name__ == "__main__":
    sys.exit(main())
