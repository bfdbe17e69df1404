"""The lab: a real libvirtd, its NAT network and guests, inside namespaces, from a Debian root.

Topology (addresses are documentation ranges; nothing touches the root namespace's network)::

    pfclient-<id>                       pfhost-<id>: a private overlay of a cached Debian root
    eth0 203.0.113.2/24  <--veth-->     uplink0 203.0.113.1/24, ip_forward=1
    default via .1                      (tests/lab/rootfs.py, tests/lab/hostroot.py) running
                                        libvirtd + virtlogd, network "default":
                                        virbr0 192.168.122.1/24 + dnsmasq, guests' taps

libvirt, QEMU, virsh, install.sh, our hook and CLI all run inside the root (its own /etc,
/opt, /usr/local, /var/lib/libvirt, /run), never the machine's: nothing of libvirt needs to be
installed on the machine, and an installation of ours there is neither touched nor in the way.

Usage::

    with Lab() as lab:                            # Debian 13's root (libvirt 11.3)
        guest = lab.start_guest("web1")           # boots, waits for the DHCP lease
        lab.http_get_from_client(lab.host_addr, 8080)
        lab.shutdown("web1")

Every name a lab makes (namespaces, scratch and work directories) carries its random suffix,
so labs of two test runs at once never meet. Each lab records what it made in
``/run/libvirt-portfwd-lab/labs/<suffix>.json`` and holds ``<suffix>.lock`` while it runs; a lab
that starts removes what a crashed one left (a record whose lock nobody holds).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..names import unique_suffix
from . import guest as guest_module
from . import rootfs as rootfs_module
from .box import Box, remove_cgroups
from .guest import GuestImage, GuestSpec
from .hostroot import Bind, HostRoot
from .proc import (
    SYSTEM_PATH,
    LabError,
    await_daemon,
    command_env,
    delete_namespaces,
    process_name,
    read_pid,
    run,
    signal_daemon,
    stop_daemon,
)

LOG = logging.getLogger("libvirt_portfwd.lab")

LIBVIRT_URI = "qemu:///system"
NETWORK = "default"
NETWORK_TEMPLATE = Path("/usr/share/libvirt/networks/default.xml")  # inside the root, as every path below
LEASE_DIR = Path("/var/lib/libvirt/dnsmasq")
NETWORK_STATUS_DIR = Path("/run/libvirt/network")
LIBVIRT_NETWORK_CONF = Path("/etc/libvirt/network.conf")
GUEST_IMAGE_DIR = Path("/var/lib/libvirt/images/libvirt-portfwd-lab")
PID_DIR = Path("/run/libvirt-portfwd-lab")
FIREWALL_BACKENDS = ("iptables", "nftables")
# libvirt 9.0 (Debian 12) has only the iptables firewall; 10.4 and later both.
RELEASE_FIREWALLS = {"bookworm": ("iptables",), "trixie": FIREWALL_BACKENDS}
TC_WRAPPER = Path(__file__).with_name("tc_wrapper.sh")
STATE_DIR = Path("/run/libvirt-portfwd-lab/labs")  # on the machine: one record and lock per running lab
HOST_ADDR = "203.0.113.1"
CLIENT_ADDR = "203.0.113.2"
PREFIX_LEN = 24
HOST_UPLINK = "uplink0"
CLIENT_IF = "eth0"
DAEMONS = ("libvirtd", "virtlogd")  # started with -d -p PID_DIR/NAME.pid; comm == NAME
LIBVIRTD_UNIT = "libvirtd.service"  # in a box (Debian 12 and 13 ship the monolithic daemon, enabled)
LIBVIRTD_CONF = Path("/etc/libvirt/libvirtd.conf")
JOURNALD_DROPIN = Path("/etc/systemd/journald.conf.d/libvirt-portfwd-lab.conf")
LOG_SETTINGS = {"LIBVIRT_LOG_FILTERS": "log_filters", "LIBVIRT_LOG_OUTPUTS": "log_outputs"}
# A host as Debian boots it has no br_netfilter (bridged frames skip iptables); this machine's
# kernel has it built in, on by default in every new network namespace.
BOX_SYSCTLS = ("net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0")
MACHINE_COMMANDS = ("ip", "nsenter", "unshare")  # the machine's own tools the lab uses


def client_python() -> str:
    """The interpreter for client probes: Debian's, else the running one."""
    return "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else sys.executable


# Probes run inside a namespace as `python3 -c SCRIPT ARGS...`.
# Exit 0: the answer on stdout; exit 1: a socket error on stderr; exit 2: a bad HTTP status.
_HTTP_PROBE = r"""
import socket, sys
addr, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    with socket.create_connection((addr, port), timeout=timeout) as conn:
        conn.settimeout(timeout)
        conn.sendall(b"GET / HTTP/1.0\r\nHost: " + addr.encode() + b"\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
except OSError as exc:
    sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
    sys.exit(1)
head, _, body = data.partition(b"\r\n\r\n")
status = head.split(b"\r\n", 1)[0].decode(errors="replace")
if status.split()[1:2] != ["200"]:
    sys.stderr.write(f"HTTP status: {status!r}\n")
    sys.exit(2)
sys.stdout.buffer.write(body)
"""

_UDP_PROBE = r"""
import socket, sys
addr, port, timeout, payload = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), bytes.fromhex(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(timeout)
try:
    sock.sendto(payload, (addr, port))
    data, _ = sock.recvfrom(65536)
except OSError as exc:
    sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
    sys.exit(1)
sys.stdout.write(data.hex())
"""


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one client probe: the answer, or why there was none."""

    answer: bytes | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.answer is not None

    def text(self) -> str | None:
        return None if self.answer is None else self.answer.decode(errors="replace")


@dataclass
class Guest:
    """A lab guest the Lab defined; address is its first NIC's leased address once known."""

    name: str
    uuid: str
    hostname: str
    macs: tuple[str, ...]
    serial_log: Path
    address: str | None = None

    def http_body(self, port: int) -> str:
        return guest_module.http_body(self.hostname, port)

    def udp_reply(self, port: int, payload: bytes) -> bytes:
        return guest_module.udp_reply(self.hostname, port, payload)


@dataclass
class _Record:
    """What a lab created, in STATE_DIR, so that a later lab can clean up after a crash."""

    suffix: str
    host_ns: str
    client_ns: str
    scratch: str  # the root's overlay directories
    temp_workdir: str = ""  # a workdir the lab made (removed by the cleanup of a stale lab)
    domains: list[str] = field(default_factory=list)

    def save(self) -> None:
        _write_json(STATE_DIR / f"{self.suffix}.json", dataclasses.asdict(self))


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def missing_prerequisites(release: str = rootfs_module.DEFAULT_RELEASE) -> list[str]:
    """Why a lab cannot run here (empty when it can)."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root")
    for command in MACHINE_COMMANDS:
        if shutil.which(command, path=SYSTEM_PATH) is None:
            missing.append(command)
    if rootfs_module.find(release) is None and shutil.which("mmdebstrap", path=SYSTEM_PATH) is None:
        missing.append("mmdebstrap (to build the lab's root file system; tests/lab/install_deps.sh)")
    try:
        overlay = "overlay" in Path("/proc/filesystems").read_text().split()
    except OSError:
        overlay = False
    if not overlay:
        missing.append("overlayfs")
    return missing


def clean_stale_labs() -> None:
    """Remove what crashed labs left: records whose lock no process holds."""
    for path in sorted(STATE_DIR.glob("*.json")):
        lock = path.with_suffix(".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a running lab
        try:
            try:
                stale = json.loads(path.read_text())
            except (OSError, ValueError):
                stale = {}
            LOG.warning("cleaning up a stale lab: %s", stale)
            namespaces = [str(stale.get(key, "")) for key in ("host_ns", "client_ns")]
            delete_namespaces([ns for ns in namespaces if ns.startswith(("pfhost-", "pfclient-"))])
            if namespaces[0].startswith("pfhost-"):  # a box was killed with its network namespace
                with contextlib.suppress(LabError, OSError):
                    remove_cgroups(namespaces[0])
            for key in ("scratch", "temp_workdir"):
                directory = str(stale.get(key, ""))
                if directory.startswith("/var/tmp/libvirt-portfwd-lab-"):
                    shutil.rmtree(directory, ignore_errors=True)
            path.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)


class Lab:
    """A libvirt host (a Debian root, in namespaces), a client namespace, and helpers to drive both.

    Parameters:
        workdir: where domain XML, serial logs and daemon logs go (a new temp dir if None); it is
            bind-mounted into the root at the same path.
        suffix: name suffix (tests.names.unique_suffix() if None): namespaces are pfhost-SUFFIX, pfclient-SUFFIX.
        path_prepend: directories put first in libvirtd's PATH (hooks inherit it).
        release: the Debian root (tests/lab/rootfs.py): "trixie" (libvirt 11.3, the default) or
            "bookworm" (libvirt 9.0: iptables only).
        firewall_backend: libvirt's ``firewall_backend`` ("iptables" or "nftables"; None: the
            packaged default), written to the root's /etc/libvirt/network.conf (the lab's own
            copy). "nftables" also puts tests/lab/tc_wrapper.sh first in libvirtd's PATH as ``tc``.
        before_libvirtd: called with the lab after the root is up and before libvirtd starts,
            e.g. to run install.sh so libvirtd finds the hooks at start.
        keep_workdir: keep a workdir the lab made at close (one passed in is always kept).
        lock_timeout: seconds to wait for another test run building the same root.
        boot: boot the root as a whole host with systemd as PID 1 (tests/lab/box.py): systemd
            starts libvirtd, virtlogd, libvirt-guests and the rest as Debian enabled them, and
            ``reboot`` works; ``before_libvirtd`` then runs after boot (libvirtd already runs),
            and ``path_prepend`` is refused (systemd's PATH: the tc wrapper goes to
            /usr/local/sbin, first in it). Without: libvirtd and virtlogd started by hand in a chroot.
    """

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        suffix: str | None = None,
        path_prepend: Sequence[str] = (),
        release: str = rootfs_module.DEFAULT_RELEASE,
        firewall_backend: str | None = None,
        before_libvirtd: Callable[[Lab], None] | None = None,
        keep_workdir: bool = False,
        lock_timeout: float = rootfs_module.BUILD_TIMEOUT,
        boot: bool = False,
    ) -> None:
        self.suffix = suffix or unique_suffix()
        self.boot = boot
        if boot and path_prepend:
            raise LabError("path_prepend: a booted lab's libvirtd has systemd's PATH")
        self.host_ns = f"pfhost-{self.suffix}"
        self.client_ns = f"pfclient-{self.suffix}"
        self.host_addr = HOST_ADDR
        self.client_addr = CLIENT_ADDR
        self.network = NETWORK
        self.bridge = "virbr0"
        self.path_prepend = tuple(path_prepend)
        self.release = rootfs_module.check_release(release)
        if firewall_backend not in (None, *RELEASE_FIREWALLS[release]):
            raise LabError(
                f"firewall_backend: {firewall_backend!r}: {release}'s libvirt has {RELEASE_FIREWALLS[release]}"
            )
        self.firewall_backend = firewall_backend
        self.before_libvirtd = before_libvirtd
        self.keep_workdir = keep_workdir
        self.lock_timeout = lock_timeout
        self.timings: dict[str, float] = {}
        self.guests: dict[str, Guest] = {}
        self.rootfs: rootfs_module.Rootfs | None = None
        self._root: HostRoot | Box | None = None
        self._own_workdir = workdir is None
        self._workdir_arg = workdir
        self.workdir = Path()
        self._lock_fd: int | None = None
        self._record: _Record | None = None
        self._image: GuestImage | None = None
        self._lease_baseline: dict[str, int | None] = {}
        self._network_started = False

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Bring the lab up: root, namespaces, daemons, network. Cleans up on failure."""
        began = time.monotonic()
        try:
            self._timed("rootfs", self._find_rootfs)
            self._register()
            self._make_workdir()
            if self.boot:
                self._make_box()
                self._write_libvirt_config()
                self._create_client_namespace()
                self._timed("boot", self._boot)
                if self.before_libvirtd is not None:
                    self.before_libvirtd(self)
            else:
                self._write_libvirt_config()
                self._create_client_namespace()
                self._link_host(["ip", "netns", "add", self.host_ns])
                self._timed("root_up", self._start_root)
                if self.before_libvirtd is not None:
                    self.before_libvirtd(self)
                self._timed("virtlogd_start", self._start_virtlogd)
                self._timed("libvirtd_start", self.start_libvirtd)
                self._timed("network_start", self._start_network)
        except BaseException:
            with contextlib.suppress(LabError):
                self.close()
            raise
        self.timings["lab_start"] = time.monotonic() - began
        LOG.info("lab up in %.1fs: %s", self.timings["lab_start"], self.timings)

    def close(self) -> None:
        """Tear everything down; every step is tried, errors are collected and raised together."""
        errors: list[str] = []
        if self._record is not None:
            if self._root is not None and self._root.running and not self.boot:  # a box just stops
                if (self._record.domains or self._network_started) and self.libvirtd_pid() is None:
                    self._collect(errors, self.start_libvirtd)  # a test stopped it: clean up through it
                self._collect(errors, self._remove_domains)
                if self._network_started:
                    self._collect(errors, self._stop_network)
                self._collect(errors, self._stop_daemons)
            if self._root is not None:
                self._collect(errors, self._root.stop)
            # what is left in the namespaces (a guest, dnsmasq) is the lab's
            self._collect(errors, lambda: delete_namespaces([self.host_ns, self.client_ns]))
            if self._root is not None:
                self._collect(errors, self._root.close)
                self._root = None
            for leftover in (STATE_DIR / f"{self.suffix}.json", STATE_DIR / f"{self.suffix}.lock"):
                leftover.unlink(missing_ok=True)
            self._record = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._own_workdir and not self.keep_workdir and self.workdir != Path():
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise LabError("lab teardown: " + "; ".join(errors))

    @staticmethod
    def _collect(errors: list[str], step: Callable[[], None]) -> None:
        try:
            step()
        except (LabError, OSError) as exc:
            errors.append(str(exc))

    def _timed(self, label: str, step: Callable[[], None]) -> None:
        began = time.monotonic()
        step()
        self.timings[label] = time.monotonic() - began

    # --- the root file system and the record ------------------------------------------------

    def _find_rootfs(self) -> None:
        try:
            self.rootfs = rootfs_module.build(self.release, lock_timeout=self.lock_timeout)
        except rootfs_module.RootfsError as exc:
            raise LabError(f"the {self.release} root file system: {exc}") from exc
        missing = guest_module.check_prerequisites(self.rootfs.path)
        if missing:
            raise LabError(f"the {self.release} root lacks what the guest needs: {', '.join(missing)}")

    def _register(self) -> None:
        """Clean up after crashed labs, then record this one (its lock held while it runs)."""
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        clean_stale_labs()
        fd = os.open(STATE_DIR / f"{self.suffix}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LabError(f"a lab with suffix {self.suffix} is running") from None
        self._lock_fd = fd
        scratch = tempfile.mkdtemp(prefix=f"libvirt-portfwd-lab-{self.suffix}-root-", dir="/var/tmp")
        self._record = _Record(self.suffix, self.host_ns, self.client_ns, scratch)
        self._record.save()

    def _make_workdir(self) -> None:
        if self._workdir_arg is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"libvirt-portfwd-lab-{self.suffix}-", dir="/var/tmp"))
            if self._record is not None and not self.keep_workdir:
                self._record.temp_workdir = str(self.workdir)
                self._record.save()
        else:
            self.workdir = self._workdir_arg
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)

    def _write_libvirt_config(self) -> None:
        if self.boot:
            self._seed_box_config()
            return
        if self.firewall_backend == "nftables":
            bin_dir = self.workdir / "bin"
            bin_dir.mkdir(exist_ok=True)
            shutil.copy(TC_WRAPPER, bin_dir / "tc")
            self.path_prepend = (str(bin_dir), *self.path_prepend)

    def _start_root(self) -> None:
        assert self.rootfs is not None and self._record is not None
        self._root = HostRoot(self.rootfs, self.host_ns, Path(self._record.scratch), [Bind(self.workdir, False)])
        self._root.start()
        self.run_in_host(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        self.path(PID_DIR).mkdir(exist_ok=True)
        if self.firewall_backend is not None and len(RELEASE_FIREWALLS[self.release]) > 1:
            with open(self.path(LIBVIRT_NETWORK_CONF), "a") as conf:
                conf.write(f'\n# libvirt-portfwd lab\nfirewall_backend = "{self.firewall_backend}"\n')

    # --- a booted host (tests/lab/box.py) ---------------------------------------------------------

    def _make_box(self) -> None:
        assert self.rootfs is not None and self._record is not None
        self._root = Box(self.rootfs, self.host_ns, Path(self._record.scratch), [Bind(self.workdir, False)])

    @property
    def box(self) -> Box:
        """The booted host (a booted lab only)."""
        if not isinstance(self._root, Box):
            raise LabError("this lab is not booted (Lab(boot=True))")
        return self._root

    def _seed_box_config(self) -> None:
        """What the lab changes of the host before its first boot, each written once: libvirt's
        firewall backend, the tc wrapper where it is needed, libvirtd's log settings."""
        box = self.box
        if self.firewall_backend is not None and len(RELEASE_FIREWALLS[self.release]) > 1:
            setting = f'# libvirt-portfwd lab\nfirewall_backend = "{self.firewall_backend}"\n'
            box.seed(LIBVIRT_NETWORK_CONF, f"{box.lower_text(LIBVIRT_NETWORK_CONF)}\n{setting}")
        if self.firewall_backend == "nftables":
            box.seed("/usr/local/sbin/tc", TC_WRAPPER.read_text(), 0o755)
        # libvirtd under TCG in a box logs bursts of errors (no /dev/kvm, no ifb devices); journald
        # would then suppress what else its cgroup logs, our hooks' lines among them
        box.seed(JOURNALD_DROPIN, "# libvirt-portfwd lab\n[Journal]\nRateLimitIntervalSec=0\n")
        env = self._daemon_env()
        settings = {LOG_SETTINGS[key]: value for key, value in env.items() if key in LOG_SETTINGS}
        if "log_outputs" in settings:
            settings["log_outputs"] += " 3:journald"  # and the journal, as packaged
        if settings:
            lines = "".join(f'{key} = "{value}"\n' for key, value in settings.items())
            box.seed(LIBVIRTD_CONF, f"{box.lower_text(LIBVIRTD_CONF)}\n# libvirt-portfwd lab\n{lines}")

    def _boot(self) -> None:
        """Boot the host, link its new network namespace to the client, wait for libvirt."""
        box = self.box
        box.start()
        self._link_host(["ip", "netns", "attach", self.host_ns, str(box.pid)])
        for setting in BOX_SYSCTLS:
            self.run_in_host(["sysctl", "-qw", setting], check=False)  # absent without br_netfilter
        self.wait_for_libvirtd()
        self._start_network()

    def poweroff(self) -> float:
        """Shut the booted host down as an admin does (``systemctl poweroff``); its network
        namespace goes with it. Returns the seconds it took."""
        seconds = self.box.poweroff()
        run(["ip", "netns", "del", self.host_ns])  # the name held it; the veth goes with it
        self.timings[f"poweroff {self.box.boots}"] = seconds
        return seconds

    def power_on(self) -> float:
        """Boot the same host again (after ``poweroff``: a reboot). Returns the seconds until
        systemd was up, libvirtd answered and the network was active."""
        began = time.monotonic()
        self._boot()
        self.timings[f"boot {self.box.boots}"] = seconds = time.monotonic() - began
        return seconds

    def reboot(self) -> float:
        """poweroff, then power_on; returns the seconds of both."""
        return self.poweroff() + self.power_on()

    @property
    def root(self) -> HostRoot | Box:
        """The running root (commands and paths inside the lab host)."""
        if self._root is None:
            raise LabError("the lab is not running")
        return self._root

    def path(self, inside: str | os.PathLike[str]) -> Path:
        """A path of the lab host's file system, as the test process reaches it."""
        return self.root.path(inside)

    # --- namespaces ----------------------------------------------------------------------------

    def _create_client_namespace(self) -> None:
        run(["ip", "netns", "add", self.client_ns])
        run(["ip", "-n", self.client_ns, "link", "set", "lo", "up"])

    def _link_host(self, name_host: Sequence[str]) -> None:
        """Name the host's network namespace (``ip netns add``, or ``attach`` a booted host's) and
        link it to the client: the uplink, both addresses, the client's default route."""
        run(name_host)
        host, client = ["ip", "-n", self.host_ns], ["ip", "-n", self.client_ns]
        run([*host, "link", "add", HOST_UPLINK, "type", "veth", "peer", "name", CLIENT_IF, "netns", self.client_ns])
        run([*host, "addr", "add", f"{HOST_ADDR}/{PREFIX_LEN}", "dev", HOST_UPLINK])
        run([*client, "addr", "add", f"{CLIENT_ADDR}/{PREFIX_LEN}", "dev", CLIENT_IF])
        for ns_ip, ifname in ((host, HOST_UPLINK), (host, "lo"), (client, CLIENT_IF)):
            run([*ns_ip, "link", "set", ifname, "up"])
        run([*client, "route", "add", "default", "via", HOST_ADDR])

    def run_in_ns(
        self,
        namespace: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside a namespace (LC_ALL=C, system PATH plus env); in the lab host's
        namespace that is inside its root (cwd, too, is a path of the root)."""
        if namespace == self.host_ns:
            return self.root.run(argv, check=check, timeout=timeout, input=input, env=env, cwd=cwd)
        return run(
            ["ip", "netns", "exec", namespace, *argv],
            check=check,
            timeout=timeout,
            input=input,
            env=command_env(env),
            cwd=cwd,
        )

    def run_in_host(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run argv in the lab host, inside its root, e.g. ``run_in_host(['./install.sh'], cwd=SRC)``."""
        return self.run_in_ns(self.host_ns, argv, **kwargs)

    def run_in_client(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run argv in the client namespace (the machine's tools)."""
        return self.run_in_ns(self.client_ns, argv, **kwargs)

    def host_argv(self, argv: Sequence[str]) -> list[str]:
        """argv that runs argv in the lab host, inside its root (for Popen)."""
        return self.root.argv(argv)

    # --- daemons -------------------------------------------------------------------------------

    def _daemon_env(self) -> dict[str, str]:
        path = ":".join([*self.path_prepend, SYSTEM_PATH])
        return {
            "PATH": path,
            "LC_ALL": "C",
            "HOME": "/root",
            "LIBVIRT_LOG_OUTPUTS": f"3:file:{self.workdir / 'libvirtd.log'}",
        }

    def _pidfile(self, name: str) -> Path:
        return self.path(PID_DIR / f"{name}.pid")

    def _spawn_daemon(self, name: str) -> None:
        argv = self.root.argv([name, "-d", "-p", str(PID_DIR / f"{name}.pid")])
        with open(self.workdir / f"{name}.out", "ab") as out:
            try:
                result = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self._daemon_env(),
                    timeout=120,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise LabError(f"{name} did not daemonize within 120 s") from exc
        if result.returncode != 0:
            raise LabError(f"{name} failed to start (exit {result.returncode}); see {self.workdir / (name + '.out')}")

    def _start_virtlogd(self) -> None:
        self._spawn_daemon("virtlogd")

    def start_libvirtd(self, timeout: float = 120.0) -> None:
        """Start libvirtd in the lab host (by hand, or systemd's unit) and wait until it answers."""
        if self.boot:
            self.box.systemctl("start", LIBVIRTD_UNIT, timeout=timeout)
        else:
            self._spawn_daemon("libvirtd")
        self.wait_for_libvirtd(timeout)

    def stop_libvirtd(self) -> None:
        if self.boot:
            self.box.systemctl("stop", LIBVIRTD_UNIT)
        else:
            stop_daemon(self._pidfile("libvirtd"), "libvirtd")

    def restart_libvirtd(self, timeout: float = 120.0) -> float:
        """Stop and start libvirtd (running guests survive; ``systemctl restart`` in a booted
        host); returns the seconds it took."""
        began = time.monotonic()
        if self.boot:
            self.box.systemctl("restart", LIBVIRTD_UNIT, timeout=timeout)
            self.wait_for_libvirtd(timeout)
        else:
            self.stop_libvirtd()
            self.start_libvirtd(timeout)
        return time.monotonic() - began

    def sighup_libvirtd(self, settle: float = 0.5) -> None:
        """SIGHUP libvirtd (it rescans hooks and rebuilds its networks' firewall; ``systemctl
        reload`` in a booted host), then wait until it answers."""
        if self.boot:
            self.box.systemctl("reload", LIBVIRTD_UNIT)
        else:
            pid = self.libvirtd_pid()
            if pid is None:
                raise LabError("libvirtd is not running")
            os.kill(pid, signal.SIGHUP)
        time.sleep(settle)
        self.wait_for_libvirtd(30.0)

    def reload_hooks(self, *, restart: bool = False) -> None:
        """Make libvirtd see hooks installed after it started: SIGHUP, or a full restart."""
        if restart:
            self.restart_libvirtd()
        else:
            self.sighup_libvirtd()

    def libvirtd_pid(self) -> int | None:
        """The pid of the lab's running libvirtd (in a booted host: as the host sees it), or None."""
        if self._root is None or not self._root.running:
            return None
        if self.boot:
            main = self.box.systemctl("show", "-p", "MainPID", "--value", LIBVIRTD_UNIT, check=False).stdout.strip()
            return int(main) if main.isdigit() and main != "0" else None
        pid = read_pid(self._pidfile("libvirtd"))
        return pid if pid is not None and process_name(pid) == "libvirtd" else None

    def wait_for_libvirtd(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            result = self.virsh("uri", check=False, timeout=30)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise LabError(f"libvirtd did not answer within {timeout:.0f} s: {result.stderr.strip()}")
            time.sleep(0.2)

    def _stop_daemons(self) -> None:
        """SIGTERM libvirtd and virtlogd together (each takes 1-2 s to exit), then wait for both."""
        signalled = []
        for name in DAEMONS:
            pidfile = self._pidfile(name)
            pid = signal_daemon(pidfile, name)
            if pid is not None:
                signalled.append((pid, name, pidfile))
        errors = []
        for pid, comm, pidfile in signalled:
            try:
                await_daemon(pid, comm, pidfile)
            except (LabError, OSError) as exc:
                errors.append(str(exc))
        if errors:
            raise LabError("; ".join(errors))

    # --- virsh and the network -----------------------------------------------------------------

    def virsh(
        self, *args: str, check: bool = True, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``virsh -c qemu:///system ARGS`` inside the lab host's root."""
        return self.run_in_host(["virsh", "-c", LIBVIRT_URI, *args], check=check, timeout=timeout, input=input)

    def _start_network(self) -> None:
        """The root autostarts "default" as an installed host does; start it if it is not up
        (a booted host must have autostarted it: it is only waited for)."""
        if self.boot:
            self._wait_until(
                lambda: _field(self.virsh("net-info", self.network, check=False).stdout, "Active") == "yes",
                60.0,
                f"libvirt to autostart network {self.network!r} at boot",
            )
        if self.virsh("net-info", self.network, check=False).returncode != 0:
            self.virsh("net-define", str(NETWORK_TEMPLATE))
        state = self.virsh("net-info", self.network).stdout
        if _field(state, "Active") != "yes":
            result = self.virsh("net-start", self.network, check=False)
            if result.returncode != 0 and "already active" not in result.stderr:
                raise LabError(f"net-start {self.network}: {result.stderr.strip()}")
        self._network_started = True
        bridge = ET.fromstring(self.virsh("net-dumpxml", self.network).stdout).find("bridge")
        if bridge is not None and bridge.get("name"):
            self.bridge = bridge.get("name", self.bridge)

    def _stop_network(self) -> None:
        result = self.virsh("net-destroy", self.network, check=False)
        if result.returncode != 0 and "not active" not in result.stderr:
            raise LabError(f"net-destroy {self.network}: {result.stderr.strip()}")
        self._network_started = False

    def restart_network(self) -> None:
        """net-destroy + net-start (running guests stay unplugged until they restart)."""
        self.virsh("net-destroy", self.network)
        self.virsh("net-start", self.network)

    # --- domains -------------------------------------------------------------------------------

    @property
    def image(self) -> GuestImage:
        """The guest image (built from the root's kernel and busybox, or taken from the cache, on
        first use), copied into the lab host's /var/lib/libvirt/images: the paths are the root's."""
        if self._image is None:
            assert self.rootfs is not None
            began = time.monotonic()
            cached = guest_module.build_guest_image(self.rootfs.path, self._compile_in_root)
            self.path(GUEST_IMAGE_DIR).mkdir(parents=True, exist_ok=True)
            for source in (cached.kernel, cached.initrd):
                shutil.copyfile(source, self.path(GUEST_IMAGE_DIR / source.name))
            self._image = dataclasses.replace(
                cached, kernel=GUEST_IMAGE_DIR / cached.kernel.name, initrd=GUEST_IMAGE_DIR / cached.initrd.name
            )
            self.timings["guest_image"] = time.monotonic() - began
        return self._image

    def _compile_in_root(self, source: Path, out: Path) -> None:
        """The guest's static UDP echo, built by the root's gcc (the workdir is the same path inside)."""
        build = self.workdir / "udpecho-build"
        build.mkdir(exist_ok=True)
        shutil.copyfile(source, build / source.name)
        argv = ["gcc", *guest_module.UDPECHO_CFLAGS, "-o", str(build / "udpecho"), str(build / source.name)]
        self.run_in_host(argv, timeout=120)
        shutil.copyfile(build / "udpecho", out)

    def define(self, xml: str) -> str:
        """Define a domain from XML (recorded for teardown); returns its name."""
        name = ET.fromstring(xml).findtext("name") or ""
        if not name:
            raise LabError("domain XML has no <name>")
        path = self.workdir / f"{name}.xml"
        path.write_text(xml)
        self.virsh("define", str(path))
        if self._record is not None and name not in self._record.domains:
            self._record.domains.append(name)
            self._record.save()
        return name

    def start_domain(self, name: str) -> float:
        """virsh start; remembers current leases so wait_for_lease sees only a new one."""
        for mac in self.domain_macs(name):
            self._lease_baseline[mac] = self._lease_expiry(mac)
        began = time.monotonic()
        self.virsh("start", name)
        return time.monotonic() - began

    def define_and_start(self, xml: str) -> str:
        """Define and start a domain; returns its name."""
        name = self.define(xml)
        self.start_domain(name)
        return name

    def guest_spec(self, name: str, **kwargs: Any) -> GuestSpec:
        """A GuestSpec with the serial log in the workdir; kwargs as GuestSpec's fields."""
        kwargs.setdefault("serial_log", self.workdir / f"{name}.serial.log")
        return GuestSpec(name=name, **kwargs)

    def start_guest(self, name: str, *, wait: bool = True, lease_timeout: float = 90.0, **kwargs: Any) -> Guest:
        """Define and start a lab guest (kwargs: GuestSpec fields such as macs, metadata,
        hostname); with wait, block until its first NIC has a lease and set .address."""
        if "macs" in kwargs:
            kwargs["macs"] = tuple(kwargs["macs"])
        spec = self.guest_spec(name, **kwargs)
        guest = Guest(name, spec.resolved_uuid(), spec.resolved_hostname(), spec.resolved_macs(), spec.serial_log)
        self.guests[name] = guest
        self.define(guest_module.domain_xml(spec, self.image))
        guest.macs = tuple(self.domain_macs(name))  # as defined (spec.interfaces_xml may set its own)
        self.timings[f"{name}:virsh_start"] = self.start_domain(name)
        if wait:
            self.wait_for_guest(guest, lease_timeout)
        return guest

    def wait_for_guest(self, guest: Guest, timeout: float = 90.0) -> str:
        """Wait for the guest's first lease, then for its HTTP port to answer from the host."""
        began = time.monotonic()
        guest.address = self.wait_for_lease(guest.macs[0], timeout, domain=guest.name)
        self.timings[f"{guest.name}:lease"] = time.monotonic() - began
        remaining = max(5.0, timeout - (time.monotonic() - began))
        self._wait_until(
            lambda: self.http_get_from_host(guest.address or "", 80, timeout=2.0) is not None,
            remaining,
            f"{guest.name}: HTTP on {guest.address}:80",
        )
        self.timings[f"{guest.name}:http_ready"] = time.monotonic() - began
        return guest.address

    def domain_macs(self, name: str) -> list[str]:
        root = ET.fromstring(self.virsh("dumpxml", "--inactive", name).stdout)
        return [mac.get("address", "").lower() for mac in root.iterfind("devices/interface/mac")]

    def domain_state(self, name: str) -> str:
        """'running', 'shut off', ... as virsh domstate prints it."""
        return self.virsh("domstate", name).stdout.strip()

    def wait_for_state(self, name: str, state: str, timeout: float = 60.0) -> float:
        began = time.monotonic()
        self._wait_until(lambda: self.domain_state(name) == state, timeout, f"{name}: state {state!r}", 0.2)
        return time.monotonic() - began

    def shutdown(self, name: str, timeout: float = 60.0) -> float:
        """virsh shutdown (ACPI power button) and wait for 'shut off'; returns the seconds."""
        began = time.monotonic()
        self.virsh("shutdown", name)
        self.wait_for_state(name, "shut off", timeout)
        return time.monotonic() - began

    def destroy(self, name: str, timeout: float = 30.0) -> float:
        """virsh destroy and wait for 'shut off'; returns the seconds."""
        began = time.monotonic()
        self.virsh("destroy", name, timeout=timeout)
        self.wait_for_state(name, "shut off", timeout)
        return time.monotonic() - began

    def undefine(self, name: str) -> None:
        """Destroy (if running) and undefine a domain, and forget it."""
        self._remove_domain(name, missing_ok=False)
        self.guests.pop(name, None)
        if self._record is not None and name in self._record.domains:
            self._record.domains.remove(name)
            self._record.save()

    def _remove_domain(self, name: str, *, missing_ok: bool) -> None:
        result = self.virsh("domstate", name, check=False)
        if result.returncode != 0:
            if missing_ok:
                return
            raise LabError(f"{name}: {result.stderr.strip()}")
        if result.stdout.strip() not in ("shut off", ""):
            self.virsh("destroy", name, check=False, timeout=30)
        self.virsh("undefine", name, timeout=30)

    def _remove_domains(self) -> None:
        errors = []
        names = list(reversed(self._record.domains)) if self._record else []
        for name in names:
            try:
                self._remove_domain(name, missing_ok=True)
            except LabError as exc:
                errors.append(str(exc))
        if errors:
            raise LabError("; ".join(errors))

    def serial_log(self, name: str) -> str:
        path = self.guests[name].serial_log if name in self.guests else self.workdir / f"{name}.serial.log"
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    # --- leases --------------------------------------------------------------------------------

    def lease_file(self) -> Path:
        """The network's lease status file, as the test process reaches it."""
        return self.path(LEASE_DIR / f"{self.bridge}.status")

    def network_status(self) -> Path:
        """libvirt's live network XML (/run/libvirt/network/NET.xml), as the test process reaches it."""
        return self.path(NETWORK_STATUS_DIR / f"{self.network}.xml")

    def read_leases(self) -> list[dict[str, Any]]:
        """The network's lease status file (a JSON list; [] when missing or mid-rewrite)."""
        try:
            data = json.loads(self.lease_file().read_text() or "[]")
        except (OSError, ValueError):
            return []
        return data if isinstance(data, list) else []

    def _lease_expiry(self, mac: str) -> int | None:
        for lease in self.read_leases():
            if str(lease.get("mac-address", "")).lower() == mac.lower():
                return int(lease.get("expiry-time", 0))
        return None

    def wait_for_lease(self, mac: str, timeout: float = 90.0, *, domain: str | None = None) -> str:
        """Wait for a lease of mac newer than the one present at the last start; returns the IP."""
        mac = mac.lower()
        baseline = self._lease_baseline.get(mac)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for lease in self.read_leases():
                if str(lease.get("mac-address", "")).lower() != mac:
                    continue
                expiry = int(lease.get("expiry-time", 0))
                if baseline is None or expiry != baseline:
                    return str(lease["ip-address"])
            time.sleep(0.1)
        tail = self.serial_log(domain)[-2000:] if domain else ""
        detail = f"; serial log tail:\n{tail}" if tail else ""
        raise LabError(f"no DHCP lease for {mac} within {timeout:.0f} s{detail}")

    # --- probes --------------------------------------------------------------------------------

    def http_probe(self, namespace: str, addr: str, port: int, timeout: float = 5.0) -> ProbeResult:
        """GET / on addr:port from inside namespace."""
        return self._probe(namespace, _HTTP_PROBE, [addr, str(port), str(timeout)], timeout, hex_output=False)

    def udp_probe(self, namespace: str, addr: str, port: int, payload: bytes, timeout: float = 5.0) -> ProbeResult:
        """Send one datagram to addr:port from inside namespace and wait for one answer."""
        return self._probe(
            namespace, _UDP_PROBE, [addr, str(port), str(timeout), payload.hex()], timeout, hex_output=True
        )

    def _probe(self, namespace: str, script: str, args: list[str], timeout: float, *, hex_output: bool) -> ProbeResult:
        """The probe script in namespace: the root's python3 in the lab host, the machine's elsewhere."""
        python = "python3" if namespace == self.host_ns else client_python()
        result = self.run_in_ns(namespace, [python, "-I", "-c", script, *args], check=False, timeout=timeout + 15)
        if result.returncode != 0:
            return ProbeResult(None, result.stderr.strip())
        out = result.stdout
        return ProbeResult(bytes.fromhex(out) if hex_output else out.encode())

    def http_get_from_client(self, addr: str, port: int, timeout: float = 5.0) -> str | None:
        """The body of GET / from the client namespace, or None."""
        return self.http_probe(self.client_ns, addr, port, timeout).text()

    def http_get_from_host(self, addr: str, port: int, timeout: float = 5.0) -> str | None:
        """The body of GET / from the lab host namespace, or None."""
        return self.http_probe(self.host_ns, addr, port, timeout).text()

    def udp_echo_from_client(self, addr: str, port: int, payload: bytes, timeout: float = 5.0) -> bytes | None:
        """The answer to one datagram sent from the client namespace, or None."""
        return self.udp_probe(self.client_ns, addr, port, payload, timeout).answer

    def udp_echo_from_host(self, addr: str, port: int, payload: bytes, timeout: float = 5.0) -> bytes | None:
        """The answer to one datagram sent from the lab host namespace, or None."""
        return self.udp_probe(self.host_ns, addr, port, payload, timeout).answer

    # --- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(interval)


# --- module helpers -----------------------------------------------------------------------------


def _field(virsh_info: str, key: str) -> str:
    for line in virsh_info.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return ""
