"""Worker processes for the fuzz test: each runs as nobody, with an address-space limit and a CPU
limit per case (tests/fuzz/worker.py), and is replaced when a case kills it or hangs it.

``run(jobs)`` yields ``(job, outcome)`` for every job, in completion order. A case that makes its
worker die (SIGXCPU: the CPU limit; SIGKILL: the wall-clock limit; a MemoryError) has an outcome
with ``failure`` saying so.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tests.fuzz.worker import receive, send

REPO = Path(__file__).resolve().parents[2]
MEMORY = 1024 * 1024 * 1024  # bytes of address space per worker (a blowup is a MemoryError)
WALL = 30.0  # seconds one case may take before its worker is killed (a hang)
FILE_SIZE = 64 * 1024 * 1024  # the largest file a worker may write


def _drop_to_nobody() -> None:
    """In the worker before exec: limits first (as root), then nobody's identity."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE, FILE_SIZE))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)


class Worker:
    def __init__(self, root: Path, seed: int, secret_path: str, log: IO[bytes]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        os.chown(root, pwd.getpwnam("nobody").pw_uid, -1)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.worker", str(root / "root"), secret_path, str(seed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=REPO,
            preexec_fn=_drop_to_nobody,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.requests, self.replies = self.proc.stdin, self.proc.stdout
        self.job: Any = None
        self.deadline = 0.0

    def give(self, job: Any) -> None:
        self.job, self.deadline = job, time.monotonic() + WALL
        send(self.requests, job)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.requests, self.replies):
            with contextlib.suppress(OSError):
                stream.close()

    def death(self) -> str:
        """Why the worker ended, for the failure of the case it was running."""
        code = self.proc.wait()
        if code < 0:
            name = signal.Signals(-code).name
            why = {"SIGXCPU": "the CPU limit", "SIGKILL": "the wall-clock limit (a hang)"}.get(name, "a signal")
            return f"worker killed by {name}: {why}"
        return f"worker exited {code}"


def run(
    jobs: Iterable[Any], workers: int, base: Path, seed: int, secret_path: str
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Every job through the pool; outcomes as they come."""
    pending = iter(jobs)
    log = open(base / "workers.log", "ab")  # noqa: SIM115 - lives as long as the workers
    pool = [Worker(base / f"w{i}", seed, secret_path, log) for i in range(workers)]
    more = True
    try:
        while True:
            for i, worker in enumerate(pool):
                if worker.job is None and more:
                    job = next(pending, None)
                    if job is None:
                        more = False
                        continue
                    try:
                        worker.give(job)
                    except BrokenPipeError:
                        pool[i] = worker = Worker(base / f"w{i}", seed, secret_path, log)
                        worker.give(job)
            busy = [w for w in pool if w.job is not None]
            if not busy:
                return
            timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready, _, _ = select.select([w.replies for w in busy], [], [], timeout)
            for i, worker in enumerate(pool):
                if worker.job is None:
                    continue
                if worker.replies in ready:
                    outcome = receive(worker.replies)
                    if outcome is None:
                        outcome = {"stage": "none", "failure": worker.death()}
                    job, worker.job = worker.job, None
                    if outcome.get("exit") or worker.proc.poll() is not None:
                        worker.stop()
                        pool[i] = Worker(base / f"w{i}", seed, secret_path, log)
                    yield job, outcome
                elif time.monotonic() > worker.deadline:
                    job, worker.job = worker.job, None
                    worker.stop()
                    pool[i] = Worker(base / f"w{i}", seed, secret_path, log)
                    yield job, {"stage": "none", "failure": f"hang: no answer within {WALL:.0f} s (worker killed)"}
    finally:
        for worker in pool:
            worker.stop()
        log.close()
