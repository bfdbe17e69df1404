"""End-to-end fixtures: real libvirt hosts (tests/lab) in namespaces, from Debian roots.

Every e2e test runs on each stock host, ``HOSTS``: Debian 12 (libvirt 9.0 as shipped: iptables
only) and Debian 13 (libvirt 11.3) under each of its libvirt firewall backends
(``firewall_backend`` in the host's /etc/libvirt/network.conf), test ids ``debian12-iptables``,
``debian13-iptables``, ``debian13-nftables`` (``-k debian12`` picks one). The roots are built
once and cached (tests/lab/rootfs.py); libvirtd, virsh, install.sh, our hook and CLI all run
inside them, and nothing of the machine's libvirt or of an installation of ours on the machine
is used or touched.

Two kinds of lab, one at a time per session: ``lab``, plain (libvirtd started by hand in a
chroot of the root), for the lab's own smoke tests; ``portfwd_lab``, the host booted with
systemd as PID 1 (tests/lab/box.py) and libvirt-portfwd installed by the checkout's install.sh
as an admin runs it, its watcher and boot sync the installed units, uninstalled at the end.
Switching kind or host closes one lab and starts the next (pytest groups the tests by host).
Labs of two sessions at once do not meet.

The lab needs root, mmdebstrap (for the first build of the root) and overlayfs. Without them the
e2e tests are skipped with the reason printed, except under CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from tests.e2e import matrix
from tests.e2e.portfwd_lab import InstallError, PortfwdLab, install, uninstall
from tests.installed import HOOK, INSTALLED_PATHS, RUN_DIR
from tests.lab.host import RELEASE_FIREWALLS, Lab, missing_prerequisites
from tests.lab.proc import LabError

_LABS: list[Lab] = []  # every lab of the session, for the timings summary
DEBIAN = {"bookworm": "debian12", "trixie": "debian13"}


@dataclass(frozen=True)
class Host:
    """A stock host: a Debian release, and libvirt's firewall backend on it."""

    release: str
    firewall: str

    @property
    def id(self) -> str:
        return f"{DEBIAN[self.release]}-{self.firewall}"


HOSTS = tuple(Host(release, firewall) for release in DEBIAN for firewall in RELEASE_FIREWALLS[release])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The matrix of matrix.py, unless --full: a test not in it for its host is deselected."""
    if config.getoption("--full"):
        return
    keep, drop = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        host = spec.params.get("host") if spec is not None else None
        if isinstance(host, Host) and not matrix.runs_on(
            item.path.name, getattr(item, "originalname", item.name), host.id
        ):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: end-to-end test with a real libvirtd and guests in network namespaces "
        "(root; mmdebstrap: tests/lab/install_deps.sh)",
    )


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip (print the reason), or fail under CI=true."""
    message = f"e2e lab unavailable: {reason}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    print(message, file=sys.stderr)
    pytest.skip(message)


def root_namespace_snapshot() -> dict[str, str]:
    """What the lab must never change in the root network namespace, nor of an installation of
    ours on the machine (read only)."""
    commands = {
        "ip_forward": ["sysctl", "-n", "net.ipv4.ip_forward"],
        "iptables": ["iptables-save"],
        "routes": ["ip", "-4", "route", "show"],
        "lab links": ["sh", "-c", "ip -o link show | grep -E ' (virbr|vnet|uplink)[0-9]' || true"],
    }
    snapshot = {}
    for key, argv in commands.items():
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout
        snapshot[key] = "\n".join(line for line in out.splitlines() if not line.startswith("#"))
    snapshot["the machine's install paths"] = "\n".join(describe_path(path) for path in MACHINE_PATHS)
    return snapshot


# install.sh's paths and libvirt's hook directory on the machine: the labs install inside their roots.
# Not the run directory: the namespace tests of a run beside this one may use the machine's.
MACHINE_PATHS = (*(path for path in INSTALLED_PATHS if path != RUN_DIR), HOOK.parent.parent)


def describe_path(path: Path) -> str:
    """A path's type, size and modification time (a directory's changes when an entry comes or goes)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return f"{path} absent"
    return f"{path} mode {info.st_mode:o} size {info.st_size} mtime {info.st_mtime_ns}"


class Labs:
    """The session's labs: at most one up at a time, plain or with libvirt-portfwd installed,
    for one libvirt firewall backend."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.current: Lab | None = None
        self.kind: tuple[bool, Host] | None = None  # (installed, host) of current
        self.failed: dict[tuple[bool, Host], tuple[str, str]] = {}  # kind -> ("skip"|"fail", message)
        self.root_before: dict[str, str] | None = None

    def get(self, installed: bool, host: Host) -> Lab:
        kind = (installed, host)
        if self.current is not None and self.kind == kind:
            return self.current
        if kind in self.failed:
            outcome, message = self.failed[kind]
            if outcome == "fail":
                pytest.fail(message, pytrace=False)
            unavailable(message)
        self.close()
        try:
            self.current = self._open(installed, host)
        except pytest.fail.Exception as exc:
            self.failed[kind] = ("fail", str(exc))
            raise
        except pytest.skip.Exception as exc:
            self.failed[kind] = ("skip", str(exc).removeprefix("e2e lab unavailable: "))
            raise
        self.kind = kind
        _LABS.append(self.current)
        what = " (booted) with libvirt-portfwd" if installed else ""
        print(f"\nlab {host.id} up{what}: {format_timings(self.current.timings)}")
        return self.current

    def _open(self, installed: bool, host: Host) -> Lab:
        missing = missing_prerequisites(host.release)
        if missing:
            unavailable("missing " + ", ".join(missing) + " (run tests/lab/install_deps.sh as root)")
        if self.root_before is None:
            self.root_before = root_namespace_snapshot()
        kind = PortfwdLab if installed else Lab
        instance = kind(
            workdir=self.factory.mktemp(f"{'portfwd-' if installed else ''}lab-{host.id}"),
            release=host.release,
            firewall_backend=host.firewall,
            before_libvirtd=install if installed else None,
        )
        try:
            instance.start()  # on failure, the lab and its root (with what install.sh wrote) are gone
        except InstallError as exc:
            pytest.fail(str(exc), pytrace=False)
        except LabError as exc:
            unavailable(f"lab did not start: {exc}")
        return instance

    def close(self) -> None:
        instance, self.current = self.current, None
        if instance is None:
            return
        errors: list[str] = []
        if isinstance(instance, PortfwdLab):
            instance.stop_watcher()  # it would put back what the uninstall removes
            # Domains go first, while the hook is installed: their stop removes their rules.
            for name in list(instance.guests):
                try:
                    instance.undefine(name)
                except LabError as exc:
                    errors.append(str(exc))
            errors += uninstall(instance)
            try:
                left = instance.our_rules()  # remove --all must leave nothing of ours in the lab host
            except LabError as exc:
                left = [str(exc)]
            if left:
                errors.append(f"rules left in {instance.host_ns} after install.sh --uninstall: {left}")
        try:
            instance.close()
        except LabError as exc:
            errors.append(str(exc))
        if errors:
            raise LabError("e2e lab teardown: " + "; ".join(errors))

    def finish(self) -> None:
        try:
            self.close()
        finally:
            if self.root_before is not None:
                after = root_namespace_snapshot()
                changed = [key for key in after if after[key] != self.root_before[key]]
                if changed:
                    raise LabError(f"the root network namespace changed during the e2e tests: {', '.join(changed)}")


@contextlib.contextmanager
def own_portfwd_lab(
    labs: Labs,
    workdir: Path,
    release: str,
    firewall: str | None = None,
    installed: Callable[[Lab], None] = install,
) -> Iterator[PortfwdLab]:
    """A booted host of a test's own with libvirt-portfwd ``installed`` (a reboot or an upgrade
    changes the host for good); the shared lab is closed first, it is not needed meanwhile."""
    labs.close()
    missing = missing_prerequisites(release)
    if missing:
        unavailable("missing " + ", ".join(missing) + " (run tests/lab/install_deps.sh as root)")
    instance = PortfwdLab(workdir=workdir, release=release, firewall_backend=firewall, before_libvirtd=installed)
    try:
        instance.start()
    except InstallError as exc:
        pytest.fail(str(exc), pytrace=False)
    except LabError as exc:
        unavailable(f"lab did not start: {exc}")
    _LABS.append(instance)
    try:
        yield instance
    finally:
        instance.close()


_HOLDERS: list[Labs] = []  # the session's holder, for the failure report


@pytest.fixture(scope="package")  # torn down (install.sh --uninstall) when tests/e2e is done
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Labs]:
    holder = Labs(tmp_path_factory)
    _HOLDERS.append(holder)
    try:
        yield holder
    finally:
        holder.finish()


@pytest.fixture(scope="package", params=HOSTS, ids=[host.id for host in HOSTS])
def host(request: pytest.FixtureRequest) -> Host:
    """The stock host of the lab (every e2e test runs on each)."""
    assert isinstance(request.param, Host)
    return request.param


@pytest.fixture(scope="package")
def libvirt_firewall(host: Host) -> str:
    """libvirt's firewall_backend on the host."""
    return host.firewall


@pytest.fixture
def lab(labs: Labs, host: Host) -> Lab:
    """The plain lab: namespaces, libvirtd, network 'default' up (no libvirt-portfwd)."""
    return labs.get(installed=False, host=host)


@pytest.fixture(scope="package")  # the tests after tests/e2e (e.g. install.sh's own) need a clean machine
def portfwd_lab(labs: Labs, host: Host) -> PortfwdLab:
    """The booted host with libvirt-portfwd installed by install.sh, as an admin does it."""
    instance = labs.get(installed=True, host=host)
    assert isinstance(instance, PortfwdLab)
    return instance


def format_timings(timings: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:.2f}s" for key, value in timings.items())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for instance in _LABS:
        kind = "booted, libvirt-portfwd" if isinstance(instance, PortfwdLab) else "plain"
        firewall = instance.firewall_backend or "as packaged"
        terminalreporter.write_sep("-", f"e2e lab timings ({instance.release}, {kind}, libvirt firewall {firewall})")
        for key, value in instance.timings.items():
            terminalreporter.write_line(f"{key:<44} {value:7.2f} s")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On an e2e failure, attach the tail of every guest's serial log and of our hook's stderr."""
    report = yield
    if report.failed and call.when == "call":
        for holder in _HOLDERS:
            instance = holder.current
            if instance is None:
                continue
            for name in instance.guests:
                report.sections.append((f"serial log {name}", instance.serial_log(name)[-3000:]))
            if isinstance(instance, PortfwdLab):
                runs = [f"{r.domain} {r.operation}: exit {r.status}: {r.stderr}" for r in instance.hook_runs()]
                report.sections.append(("libvirt-portfwd hook runs (libvirtd log)", "\n".join(runs[-40:])))
                if instance.boot and instance.box.running:
                    report.sections.append(("libvirt-portfwd.service unit", instance.watcher_output()[-3000:]))
                    report.sections.append(("journal of our lines", "\n".join(instance.our_journal("-b")[-60:])))
                waiter_log = instance.path(RUN_DIR / "waiter.log")
                if waiter_log.is_file():
                    report.sections.append(("libvirt-portfwd waiter.log", waiter_log.read_text()[-3000:]))
    return report
