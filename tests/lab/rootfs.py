"""Cached Debian root file systems for the lab: a stock libvirt host, never installed on the machine.

    python3 -m tests.lab.rootfs build [bookworm|trixie]   # build (or find) a root; prints its path
    python3 -m tests.lab.rootfs path [bookworm|trixie]    # the cached root, or exit 1
    python3 -m tests.lab.rootfs key [bookworm|trixie]     # the cache key

``mmdebstrap`` makes a Debian 12 (bookworm: libvirt 9.0 as shipped) or Debian 13 (trixie:
libvirt 11.3) root with libvirt, QEMU, the firewall tools, what install.sh needs offline, and
what the lab's guest is built from (a kernel, busybox-static, a static C toolchain), and the firewall
managers found beside libvirt on real hosts (Docker, firewalld, ufw: installed, not running). The
end-to-end lab runs its libvirtd inside a private overlay of such a root (tests/lab/host.py);
the stock-hosts tests boot the same roots with systemd.

The package mirror is the machine's own (its apt sources); none is named here.

Cache: ``/var/cache/libvirt-portfwd-tests/roots/<release>-<key>/root`` (machine-wide, so two
clones share one build; ``LIBVIRT_PORTFWD_TEST_CACHE`` moves the parent directory). The key
hashes the package list and this file. A build runs under an exclusive ``fcntl.flock`` on
``roots/<release>.lock`` (a second test run waits for it, then finds the root built), into a
temporary directory renamed into place when complete. A root is never written after it is
built: labs mount it as the read-only lower layer of an overlay and hold a shared lock on its
``use.lock`` while they do, so that pruning (other keys unused for a week) never removes a root
in use.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.installed import INSTALL_SH_PACKAGES

RELEASES = ("bookworm", "trixie")
DEFAULT_RELEASE = "trixie"  # libvirt 11.3: both firewall backends
CACHE_ENV = "LIBVIRT_PORTFWD_TEST_CACHE"
DEFAULT_CACHE_DIR = Path("/var/cache/libvirt-portfwd-tests")
MIRROR_ENV = "LIBVIRT_PORTFWD_TEST_MIRROR"  # overrides the machine's apt sources
BUILD_TIMEOUT = 1800.0
PRUNE_AGE = 7 * 24 * 3600.0

# A stock libvirt host as Debian installs it (no recommends), plus tzdata (LAB-NOTES: an upgrade's
# tzdata postinst) and the tools the lab itself runs inside (ip, tc, sysctl, ps).
HOST_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libvirt-daemon-system",
    "libvirt-clients",
    "qemu-system-x86",
    "dnsmasq-base",
    "iptables",
    "nftables",
    "iproute2",
    "procps",
    "tzdata",
    "python3",
)
# libvirt 9.1 and later split the drivers into packages of their own.
# Debian 13 split Docker's command line out of docker.io (docker-cli, a Recommends there).
RELEASE_PACKAGES = {
    "bookworm": ("libvirt-daemon-driver-qemu",),
    "trixie": ("libvirt-daemon-driver-qemu", "libvirt-daemon-driver-network", "docker-cli"),
}
# The firewall managers a libvirt host often has beside libvirt (issue 15; tests/e2e/neighbours.py),
# from the release's own archive. Installed, not running: their services are disabled in the root
# (DISABLED_UNITS; ufw as packaged, ENABLED=no; nftables.service disabled as Debian ships it), so
# that every other scenario still boots a stock libvirt host.
NEIGHBOUR_PACKAGES = ("docker.io", "firewalld", "ufw")
DISABLED_UNITS = ("docker.service", "docker.socket", "containerd.service", "firewalld.service")
# The lab's guest (tests/lab/guest.py): kernel and modules, busybox, a static toolchain for its UDP echo.
GUEST_PACKAGES = ("linux-image-amd64", "busybox-static", "cpio", "gcc", "libc6-dev")
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")
QEMU_CONF_LINES = (
    "# libvirt-portfwd tests: this machine mounts cgroup v1, read-only in a box; run VMs without cgroups",
    "cgroup_controllers = [ ]",
)
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOSTNAME = "pfhost"
# What a usable root answers (run inside it with chroot).
CHECKS = (
    ("libvirtd", "--version"),
    ("virsh", "--version"),
    ("qemu-system-x86_64", "--version"),
    ("python3", "-c", "import jinja2, libvirt, lxml.etree, yaml"),
    ("docker", "--version"),
    ("firewall-offline-cmd", "--version"),
    ("ufw", "--version"),
)
VERSIONS = (
    "libvirt-daemon",
    "qemu-system-x86",
    "python3",
    "linux-image-amd64",
    "systemd",
    *NEIGHBOUR_PACKAGES,
)


class RootfsError(Exception):
    """A root could not be built or found; the message says why."""


@dataclass(frozen=True)
class Rootfs:
    """A built root: the file system, and what was recorded when it was built."""

    release: str
    key: str
    path: Path  # the root file system (read-only by convention)
    info: dict[str, object]

    @property
    def entry(self) -> Path:
        return self.path.parent

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Hold a shared lock on this root while a lab uses it (pruning takes it exclusively)."""
        fd = os.open(self.entry / "use.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            os.utime(self.entry)
            yield
        finally:
            os.close(fd)


# --- what to build ------------------------------------------------------------------------------


def packages(release: str) -> list[str]:
    """Every package the root of release gets (sorted, unique)."""
    check_release(release)
    return sorted(
        {*HOST_PACKAGES, *RELEASE_PACKAGES[release], *INSTALL_SH_PACKAGES, *NEIGHBOUR_PACKAGES, *GUEST_PACKAGES}
    )


def check_release(release: str) -> str:
    if release not in RELEASES:
        raise RootfsError(f"unknown release {release!r}: one of {', '.join(RELEASES)}")
    return release


def cache_key(release: str) -> str:
    """A hash of the package list and of this builder's code."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"release": release, "packages": packages(release)}).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def roots_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR) / "roots"


# --- the machine's mirror -----------------------------------------------------------------------


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    stanza: dict[str, str] = {}
    last = ""
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if stanza:
                yield stanza
            stanza, last = {}, ""
        elif line.startswith("#"):
            continue
        elif line[0] in " \t" and last:
            stanza[last] += " " + line.strip()
        else:
            name, _, value = line.partition(":")
            last = name.strip().lower()
            stanza[last] = value.strip()


def _is_archive(uri: str, suites: Sequence[str]) -> bool:
    """The Debian archive proper: a plain suite (no -security, -updates, -backports)."""
    if not uri.startswith(("http://", "https://", "file:/")) or "security" in uri:
        return False
    return any(suite and "-" not in suite and "/" not in suite for suite in suites)


def find_mirror(etc_apt: Path = Path("/etc/apt")) -> str:
    """The Debian archive URI the machine's apt uses (deb822 ``URIs:`` or a one-line ``deb``)."""
    override = os.environ.get(MIRROR_ENV)
    if override:
        return override
    for sources in sorted(glob.glob(str(etc_apt / "sources.list.d" / "*.sources"))):
        for stanza in _deb822_stanzas(Path(sources).read_text(errors="replace")):
            if stanza.get("enabled", "yes").lower() == "no" or "deb" not in stanza.get("types", "").split():
                continue
            for uri in stanza.get("uris", "").split():
                if _is_archive(uri, stanza.get("suites", "").split()):
                    return uri
    lists = [etc_apt / "sources.list", *sorted(Path(p) for p in glob.glob(str(etc_apt / "sources.list.d" / "*.list")))]
    for path in lists:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and _is_archive(words[1], words[2:3]):
                    return words[1]
    raise RootfsError(f"no Debian archive in the machine's apt sources ({etc_apt}); set {MIRROR_ENV}")


# --- build --------------------------------------------------------------------------------------


def _flock(path: Path, timeout: float) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RootfsError(f"{path}: still locked after {timeout:.0f} s (another build)") from None
            time.sleep(0.5)


def _load(entry: Path, release: str, key: str) -> Rootfs | None:
    try:
        info = json.loads((entry / "info.json").read_text())
    except (OSError, ValueError):
        return None
    if not (entry / "root" / "usr" / "sbin" / "libvirtd").exists():
        return None
    return Rootfs(release, key, entry / "root", info)


def find(release: str = DEFAULT_RELEASE) -> Rootfs | None:
    """The cached root for release and today's key, or None."""
    key = cache_key(release)
    return _load(roots_dir() / f"{release}-{key}", release, key)


def build(release: str = DEFAULT_RELEASE, *, log: Path | None = None, lock_timeout: float = BUILD_TIMEOUT) -> Rootfs:
    """The root for release: from the cache, else built (under the release's lock) and cached."""
    key = cache_key(release)
    base = roots_dir()
    entry = base / f"{release}-{key}"
    found = _load(entry, release, key)
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise RootfsError("building a root needs root")
    if shutil.which("mmdebstrap") is None:
        raise RootfsError("mmdebstrap is missing (apt-get install mmdebstrap; tests/lab/install_deps.sh does)")
    base.mkdir(parents=True, exist_ok=True)
    base.parent.chmod(0o755)
    base.chmod(0o755)
    fd = _flock(base / f"{release}.lock", lock_timeout)
    try:
        found = _load(entry, release, key)  # built by whoever held the lock before us
        if found is not None:
            return found
        prune(release, keep=entry)
        staging = Path(tempfile.mkdtemp(prefix=f".build-{release}-", dir=base))
        try:
            info = _build_into(staging, release, key, log or staging / "build.log")
            shutil.rmtree(entry, ignore_errors=True)  # a half-made entry (no info.json)
            staging.rename(entry)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return Rootfs(release, key, entry / "root", info)
    finally:
        os.close(fd)


def _run_logged(argv: Sequence[str], log: Path, timeout: float) -> None:
    with open(log, "ab") as out:
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root"}
        try:
            result = subprocess.run(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise RootfsError(f"{argv[0]} timed out after {timeout:.0f} s; see {log}") from exc
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RootfsError(f"{' '.join(argv[:3])}...: exit {result.returncode}; {log}:\n{tail}")


def chroot_run(root: Path, argv: Sequence[str], timeout: float = 60.0) -> str:
    """Run argv inside root (plain chroot: no /proc, no network namespace); its stdout."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root"}
    result = subprocess.run(
        ["chroot", str(root), *argv], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RootfsError(f"in {root}: {' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def _build_into(staging: Path, release: str, key: str, log: Path) -> dict[str, object]:
    root = staging / "root"
    mirror = find_mirror()
    began = time.monotonic()
    argv = [
        "mmdebstrap",
        "--mode=root",
        "--variant=apt",
        "--include=" + ",".join(packages(release)),
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in DPKG_EXCLUDES),
        "--aptopt=Acquire::Retries 3",
        release,
        str(root),
        mirror,
    ]
    # mmdebstrap keeps daemons from starting while it installs (its own policy-rc.d, removed after).
    _run_logged(argv, log, BUILD_TIMEOUT)
    mmdebstrap_seconds = time.monotonic() - began
    _apply_fixes(root)
    for check in CHECKS:
        chroot_run(root, check)
    query = chroot_run(root, ["dpkg-query", "-W", "-f=${Package} ${Version}\n", *VERSIONS])
    versions = dict(line.split(" ", 1) for line in query.splitlines() if " " in line)
    info: dict[str, object] = {
        "release": release,
        "key": key,
        "packages": packages(release),
        "versions": versions,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mmdebstrap_seconds": round(mmdebstrap_seconds, 1),
        "total_seconds": round(time.monotonic() - began, 1),
    }
    (staging / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    staging.chmod(0o755)
    return info


def _apply_fixes(root: Path) -> None:
    """LAB-NOTES' verified differences between an mmdebstrap root and an installed host."""
    if (root / "usr/sbin/policy-rc.d").exists():
        raise RootfsError(f"{root}: a policy-rc.d was left behind")
    certs = root / CA_BUNDLE.relative_to("/")
    if CA_BUNDLE.is_file() and not certs.exists():  # apt or pip over https inside the root
        certs.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CA_BUNDLE, certs)
    qemu_conf = root / "etc/libvirt/qemu.conf"
    with open(qemu_conf, "a") as out:
        out.write("\n" + "\n".join(QEMU_CONF_LINES) + "\n")
    # An installed host autostarts libvirt's "default" network; mmdebstrap's install does not.
    networks = root / "etc/libvirt/qemu/networks"
    if (networks / "default.xml").is_file():
        (networks / "autostart").mkdir(exist_ok=True)
        link = networks / "autostart/default.xml"
        if not link.is_symlink():
            link.symlink_to("../default.xml")
    (root / "etc/hostname").write_text(HOSTNAME + "\n")
    _disable_neighbours(root)


def _disable_neighbours(root: Path) -> None:
    """The neighbours' services off, as on a libvirt host without them (their postinst enabled
    them); nftables.service and ufw as Debian ships them, checked."""
    chroot_run(root, ["systemctl", "disable", "--quiet", *DISABLED_UNITS])
    for unit in (*DISABLED_UNITS, "nftables.service"):
        state = subprocess.run(
            ["chroot", str(root), "systemctl", "is-enabled", unit],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,  # is-enabled exits 1 for a disabled unit
        ).stdout.strip()
        if state not in ("disabled", "masked"):
            raise RootfsError(f"{root}: {unit} is {state!r} after disabling it")
    ufw_conf = (root / "etc/ufw/ufw.conf").read_text()
    if not re.search(r"^ENABLED=no$", ufw_conf, re.M):
        raise RootfsError(f"{root}: /etc/ufw/ufw.conf does not say ENABLED=no")


def prune(release: str, keep: Path, max_age: float = PRUNE_AGE) -> None:
    """Remove roots of release with other keys, unused for max_age and not in use now."""
    now = time.time()
    for entry in roots_dir().glob(f"{release}-*"):
        if entry == keep or not entry.is_dir():
            continue
        with contextlib.suppress(OSError):
            if now - entry.stat().st_mtime < max_age:
                continue
            fd = os.open(entry / "use.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(entry)
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
    for stale in roots_dir().glob(f".build-{release}-*"):
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime > BUILD_TIMEOUT:  # a build killed before its cleanup
                shutil.rmtree(stale)


# --- CLI ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.lab.rootfs", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "path", "key"))
    parser.add_argument("release", nargs="?", default=DEFAULT_RELEASE, choices=RELEASES)
    args = parser.parse_args(argv)
    try:
        if args.command == "key":
            print(cache_key(args.release))
            return 0
        if args.command == "path":
            found = find(args.release)
            if found is None:
                print(f"rootfs: no {args.release} root for key {cache_key(args.release)}", file=sys.stderr)
                return 1
            print(found.path)
            return 0
        began = time.monotonic()
        rootfs = build(args.release)
        print(f"rootfs: {args.release} ready in {time.monotonic() - began:.1f} s: {rootfs.info.get('versions')}")
        print(rootfs.path)
    except RootfsError as exc:
        print(f"rootfs: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
