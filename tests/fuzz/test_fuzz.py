"""The fuzz test: ten thousand structure-aware hostile inputs through the pipeline, every one in a
worker with CPU and memory limits (tests/fuzz/pool.py), the rendered rulesets checked by the real
tools and a few hundred inputs run through the real CLI process (tests/fuzz/tools.py).

Zero tracebacks, hangs, memory blowups, unclear messages (every refusal is one line of ours),
canaries (the secret file's content anywhere, the injection token in any ruleset) or rulesets the
real tools refuse; and each family's inputs reach each stage (parsed, planned, rendered) at least
as often as its minimum says, so that a generator that stops reaching the renderer fails too.

Fixed seed; about two minutes on two cores. A longer run:
``LIBVIRT_PORTFWD_FUZZ_INPUTS=100000 LIBVIRT_PORTFWD_FUZZ_SEED=7 tests/run tests/fuzz``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need_root
from tests.fuzz import pool, tools
from tests.fuzz.inputs import FAMILIES, INJECT, Case, Context, Generator
from tests.fuzz.worker import materialize

pytestmark = pytest.mark.netns

INPUTS = int(os.environ.get("LIBVIRT_PORTFWD_FUZZ_INPUTS", "10200"))
SEED = int(os.environ.get("LIBVIRT_PORTFWD_FUZZ_SEED", "11"))
CLI_RUNS = int(os.environ.get("LIBVIRT_PORTFWD_FUZZ_CLI", "300"))
SHARE = {"xml": 0.22, "metadata": 0.28, "config": 0.16, "leases": 0.12, "network": 0.12, "cli": 0.10}
STAGES = ("parsed", "planned", "rendered")
REAL_CLI = "real CLI"  # the row of the inputs that also went through the CLI process
# The share of each family's inputs that must reach each stage (what the generators aim at).
MINIMUM = {
    "xml": {"parsed": 0.25, "planned": 0.18, "rendered": 0.15},
    "metadata": {"parsed": 0.25, "planned": 0.20, "rendered": 0.18},
    "config": {"parsed": 0.08, "planned": 0.07, "rendered": 0.06},
    "leases": {"parsed": 0.90, "planned": 0.40, "rendered": 0.20},
    "network": {"parsed": 0.70, "planned": 0.12, "rendered": 0.10},
    "cli": {"parsed": 0.40, "planned": 0.10, "rendered": 0.08},
    REAL_CLI: {"parsed": 0.99, "planned": 0.15, "rendered": 0.12},
}
PREFIX = "libvirt-portfwd: "
MESSAGE_MAX = 600  # characters: a clear line, not a dump of the input


def jobs(total: int) -> list[tuple[str, int]]:
    """The families interleaved, each its share of ``total``."""
    counts = {family: max(1, round(total * SHARE[family])) for family in FAMILIES}
    out = [(family, i) for family in FAMILIES for i in range(counts[family])]
    return sorted(out, key=lambda job: (job[1] / counts[job[0]], job[0]))


class Report:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.inputs: Counter[str] = Counter()
        self.stages: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.problems: list[str] = []
        self.rulesets: dict[str, dict[str, str]] = {"iptables": {}, "nftables": {}}  # backend -> digest -> text
        self.where: dict[str, str] = {}  # digest -> the case that rendered it

    def add(self, case: str, family: str, outcome: dict[str, Any]) -> None:
        self.inputs[family] += 1
        stage = outcome.get("stage", "none")
        for reached in STAGES[: STAGES.index(stage) + 1] if stage in STAGES else ():
            self.stages[family][reached] += 1
        if outcome.get("failure"):
            self.problem(case, f"failure: {outcome['failure'].strip().splitlines()[-1]}", outcome["failure"])
        message = outcome.get("message")
        if message is not None and (
            not message.startswith(PREFIX) or "\n" in message or len(message) > MESSAGE_MAX or "Traceback" in message
        ):
            self.problem(case, f"unclear message: {message[:300]!r}")
        texts = [message or "", *outcome.get("outputs", ()), *outcome.get("rulesets", {}).values()]
        if any(self.secret in text for text in texts):
            self.problem(case, "the secret file's content is in the output")
        for backend, text in outcome.get("rulesets", {}).items():
            if INJECT in text:
                self.problem(case, f"injection: {INJECT!r} in the {backend} ruleset")
            digest = hashlib.sha1(text.encode()).hexdigest()
            self.rulesets.setdefault(backend, {})[digest] = text
            self.where.setdefault(digest, case)

    def problem(self, case: str, line: str, detail: str = "") -> None:
        self.problems.append(f"{case}: {line}" + (f"\n{detail}" if detail and len(self.problems) < 5 else ""))

    def table(self) -> str:
        lines = [f"{'family':10} {'inputs':>7} " + " ".join(f"{s:>9}" for s in STAGES)]
        for family in (*FAMILIES, REAL_CLI):
            lines.append(
                f"{family:10} {self.inputs[family]:7} " + " ".join(f"{self.stages[family][s]:9}" for s in STAGES)
            )
        total = Counter[str]()
        for counts in self.stages.values():
            total.update(counts)
        lines.append(f"{'all':10} {sum(self.inputs.values()):7} " + " ".join(f"{total[s]:9}" for s in STAGES))
        return "\n".join(lines)


def run_real_cli(ns: str, base: Path, generator: Generator, picks: list[tuple[str, int]], report: Report) -> int:
    """The real CLI process (hooks/boot.py under Debian's python3, as root, in the namespace)."""

    def one(n: int, job: tuple[str, int]) -> tuple[Case, Any]:
        case = generator.case(*job)
        root = base / "cli" / str(n)
        materialize(root, case, generator.ctx.secret_path)
        return case, tools.cli_plan(ns, root, case.domain)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as threads:
        done = list(threads.map(lambda item: one(*item), enumerate(picks)))
    for case, proc in done:
        name = f"real CLI {case.brief()}"
        out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        outcome: dict[str, Any] = {"stage": "parsed", "outputs": [out, err], "rulesets": {}}
        if proc.returncode not in (0, 1) or "Traceback" in err or err.count("\n") > 1:
            outcome["failure"] = f"exit {proc.returncode}: {err.strip()[:300]}"
        elif proc.returncode == 1:
            outcome["message"] = err.removesuffix("\n")
        else:
            outcome["stage"] = "planned"
            rules = "".join(line + "\n" for line in out.splitlines() if not line.startswith("#"))
            if rules:
                outcome["stage"] = "rendered"
                backend = out.split("\n", 1)[0].split(", backend ", 1)[1].split()[0]
                outcome["rulesets"] = {backend: rules}
        report.add(name, REAL_CLI, outcome)
    return len(done)


def test_fuzz(capsys: pytest.CaptureFixture[str]) -> None:
    need_root()
    begin = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="pff-"))
    try:
        base.chmod(0o755)  # the workers run as nobody
        secret = f"pfsecret{secrets.token_hex(8)}"
        secret_path = base / "secret.txt"
        secret_path.write_text(f"{secret}\n")
        secret_path.chmod(0o644)  # readable by nobody: only the parser's refusal keeps it out
        report = Report(secret)
        todo = jobs(INPUTS)
        for (family, index), outcome in pool.run(todo, os.cpu_count() or 2, base, SEED, str(secret_path)):
            report.add(f"{family}#{index} ({outcome.get('what', '?')})", family, outcome)
        generator = Generator(SEED, Context(secret=secret, secret_path=str(secret_path)))
        others = [job for job in todo if job[0] != "cli"]
        picks = others[:: max(1, len(others) // CLI_RUNS)][:CLI_RUNS]
        with tools.namespace() as ns:
            real = run_real_cli(ns, base, generator, picks, report)
            checked = Counter[str]()
            for backend, texts in report.rulesets.items():
                checked[backend] = len(texts)
                for text, why in tools.refused(ns, backend, list(texts.values())):
                    case = report.where[hashlib.sha1(text.encode()).hexdigest()]
                    report.problem(case, f"{backend} refused the ruleset: {why}")
        elapsed = time.monotonic() - begin
        with capsys.disabled():
            workers = sum(report.inputs.values()) - real
            print(f"\nfuzz: seed {SEED}, {workers} inputs in workers + {real} through the real CLI, {elapsed:.0f} s")
            print(report.table())
            print(f"rulesets the real tools checked: iptables {checked['iptables']}, nftables {checked['nftables']}")
            print(f"problems: {len(report.problems)}")
        assert not report.problems, "\n".join(report.problems[:40])
        assert sum(report.inputs[f] for f in FAMILIES) >= min(INPUTS, 10_000)
        assert real >= min(CLI_RUNS, 200)
        short = [
            f"{family} {stage}: {report.stages[family][stage]} < {share:.0%} of {report.inputs[family]}"
            for family, minimum in MINIMUM.items()
            for stage, share in minimum.items()
            if report.stages[family][stage] < share * report.inputs[family]
        ]
        assert not short, short
    finally:
        shutil.rmtree(base, ignore_errors=True)
