"""A small real guest for the lab: Debian's kernel plus a busybox initramfs, and its domain XML.

The guest boots in a few seconds under TCG, takes a DHCP lease on every NIC, and serves:

- TCP ``HTTP_PORTS`` (80, 443) with busybox httpd; ``GET /`` answers ``http_body(hostname, port)``;
- UDP ``UDP_PORTS`` (5353, 5354) with a static C echo; it answers ``udp_reply(hostname, port,
  payload)``;
- the ACPI power button (``virsh shutdown``) with busybox acpid running ``poweroff -f``.

The hostname is the domain name unless given; it travels on the kernel command line
(``portfwd.hostname=NAME``) so one image serves every guest.

The kernel, its modules, busybox and the C compiler come from the lab's root file system
(tests/lab/rootfs.py), not from the machine. Images are cached under
``/var/cache/libvirt-portfwd-tests/guest-<key>/`` (override with ``LIBVIRT_PORTFWD_TEST_CACHE``);
the key is a hash of every input, so a new kernel, busybox or init script builds a new image and
an unchanged root reuses the old one. Builds take an exclusive lock on ``guest.lock`` there and
rename a complete image into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import time
import uuid as uuid_module
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from .proc import LabError, run

HTTP_PORTS = (80, 443)
UDP_PORTS = (5353, 5354)
MEMORY_MIB = 256
# The NIC drivers in the order LAB-NOTES verified, then the power button and its evdev node.
ROOT_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "button",
    "evdev",
)
BUILD_VERSION = "lab-guest-1"
CACHE_ENV = "LIBVIRT_PORTFWD_TEST_CACHE"
DEFAULT_CACHE_DIR = Path("/var/cache/libvirt-portfwd-tests")
CACHE_MAX_AGE = 7 * 24 * 3600.0  # images unused this long are removed when a new one is built
BUSYBOX = Path("/bin/busybox")  # inside the root
HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "guest_init.sh"
UDHCPC_SCRIPT = HERE / "guest_udhcpc.sh"
UDPECHO_SOURCE = HERE / "udpecho.c"
POWER_BUTTON_ACTION = "#!/bin/sh\necho 'lab-acpid: power button, powering off' >/dev/console\npoweroff -f\n"
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


@dataclass(frozen=True)
class GuestImage:
    """A built guest: kernel and initramfs paths (readable by QEMU) and the kernel version."""

    kernel: Path
    initrd: Path
    kernel_version: str
    key: str


@dataclass(frozen=True)
class KernelSource:
    """An installed kernel whose modules are present."""

    image: Path
    version: str
    modules_dir: Path


# --- expected answers -------------------------------------------------------------------------


def http_body(hostname: str, port: int) -> str:
    """The body the guest's httpd returns for ``GET /`` on port."""
    return f"port{port} {hostname}\n"


def udp_reply(hostname: str, port: int, payload: bytes) -> bytes:
    """The datagram the guest's UDP echo returns for payload sent to port."""
    return f"{hostname}:{port}:".encode() + payload


# --- identities -------------------------------------------------------------------------------


def mac_for(name: str, index: int = 0) -> str:
    """A stable locally administered MAC (QEMU's 52:54:00 prefix) for NIC index of name."""
    digest = hashlib.sha256(f"{name}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def uuid_for(name: str) -> str:
    """A stable UUID for a lab domain name."""
    return str(uuid_module.uuid5(uuid_module.NAMESPACE_URL, f"urn:libvirt-portfwd-lab:{name}"))


def check_hostname(hostname: str) -> str:
    if not _HOSTNAME_RE.match(hostname):
        raise ValueError(f"invalid guest hostname {hostname!r}: letters, digits, '._-' only")
    return hostname


# --- domain XML -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestSpec:
    """What domain_xml needs besides the image. macs default to mac_for(name)."""

    name: str
    serial_log: Path
    macs: tuple[str, ...] = ()
    uuid: str | None = None
    hostname: str | None = None
    network: str = "default"
    memory_mib: int = MEMORY_MIB
    metadata: str | None = None
    extra_cmdline: str = ""
    interfaces_xml: tuple[str, ...] = ()

    def resolved_macs(self) -> tuple[str, ...]:
        return self.macs or (mac_for(self.name),)

    def resolved_uuid(self) -> str:
        return self.uuid or uuid_for(self.name)

    def resolved_hostname(self) -> str:
        return check_hostname(self.hostname or self.name)


def interface_xml(mac: str, network: str = "default") -> str:
    return (
        "    <interface type='network'>\n"
        f"      <source network={quoteattr(network)}/>\n"
        f"      <mac address={quoteattr(mac)}/>\n"
        "      <model type='virtio'/>\n"
        "    </interface>\n"
    )


def domain_xml(spec: GuestSpec, image: GuestImage) -> str:
    """Domain XML: TCG, direct kernel boot, ACPI, virtio NICs on spec.network, serial to a file.

    spec.metadata is inserted verbatim inside ``<metadata>`` (it must be well-formed XML with
    its own namespace); spec.interfaces_xml, when given, replaces the generated interfaces.
    """
    cmdline = f"console=ttyS0 portfwd.hostname={spec.resolved_hostname()} {spec.extra_cmdline}"
    interfaces = spec.interfaces_xml or tuple(interface_xml(mac, spec.network) for mac in spec.resolved_macs())
    metadata = f"  <metadata>\n{spec.metadata}\n  </metadata>\n" if spec.metadata else ""
    return (
        "<domain type='qemu'>\n"
        f"  <name>{escape(spec.name)}</name>\n"
        f"  <uuid>{spec.resolved_uuid()}</uuid>\n"
        f"{metadata}"
        f"  <memory unit='MiB'>{spec.memory_mib}</memory>\n"
        "  <vcpu>1</vcpu>\n"
        "  <os>\n"
        "    <type arch='x86_64'>hvm</type>\n"
        f"    <kernel>{escape(str(image.kernel))}</kernel>\n"
        f"    <initrd>{escape(str(image.initrd))}</initrd>\n"
        f"    <cmdline>{escape(cmdline.strip())}</cmdline>\n"
        "  </os>\n"
        "  <features><acpi/></features>\n"
        "  <on_poweroff>destroy</on_poweroff>\n"
        "  <on_reboot>restart</on_reboot>\n"
        "  <on_crash>destroy</on_crash>\n"
        "  <devices>\n"
        f"{''.join(interfaces)}"
        "    <serial type='file'>\n"
        f"      <source path={quoteattr(str(spec.serial_log))}/>\n"
        "      <target port='0'/>\n"
        "    </serial>\n"
        "    <controller type='usb' model='none'/>\n"
        "    <memballoon model='none'/>\n"
        "  </devices>\n"
        "</domain>\n"
    )


# --- kernel and modules -----------------------------------------------------------------------


def _version_key(version: str) -> list[tuple[int, str]]:
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"[.-]", version)]


def _modules_dir(root: Path, version: str) -> Path | None:
    for base in (root / "lib/modules", root / "usr/lib/modules"):
        if (base / version / "modules.dep").is_file():
            return base / version
    return None


def _kernel_candidates(root: Path) -> Iterator[tuple[Path, str]]:
    for image in (root / "boot").glob("vmlinuz-*"):
        yield image, image.name.removeprefix("vmlinuz-")
    for base in (root / "lib/modules", root / "usr/lib/modules"):
        for image in base.glob("*/vmlinuz"):
            yield image, image.parent.name


def find_kernel(root: Path) -> KernelSource:
    """The newest kernel image of root whose modules directory exists."""
    found: dict[str, KernelSource] = {}
    for image, version in _kernel_candidates(root):
        modules = _modules_dir(root, version)
        if modules is not None and image.is_file():
            found.setdefault(version, KernelSource(image, version, modules))
    if not found:
        raise LabError(f"no kernel with modules in {root}: its root needs linux-image-amd64 (tests/lab/rootfs.py)")
    return found[max(found, key=_version_key)]


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for suffix in _MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def read_module_deps(modules_dir: Path) -> dict[str, tuple[str, list[str]]]:
    """modules.dep as name -> (relative path, [dependency names])."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        if path:
            deps[_module_name(path)] = (path, [_module_name(dep) for dep in rest.split()])
    return deps


def read_builtin_modules(modules_dir: Path) -> set[str]:
    builtin = modules_dir / "modules.builtin"
    if not builtin.is_file():
        return set()
    return {_module_name(line) for line in builtin.read_text().split()}


def resolve_modules(modules_dir: Path, roots: Sequence[str] = ROOT_MODULES) -> list[tuple[str, Path]]:
    """Modules to insmod, dependencies first: [(name, file)]; built-in modules are left out."""
    deps = read_module_deps(modules_dir)
    builtin = read_builtin_modules(modules_dir)
    order: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in deps:
            raise LabError(f"kernel module {name} not found in {modules_dir}")
        path, requires = deps[name]
        for dep in reversed(requires):
            visit(dep)
        order.append((name, modules_dir / path))

    for root in roots:
        visit(root)
    return order


def read_module(path: Path) -> bytes:
    """A module's ELF bytes; busybox insmod cannot decompress, so do it here."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True, timeout=30).stdout
    return data


# --- static binaries --------------------------------------------------------------------------


def is_static_elf(path: Path) -> bool:
    """True when path is a 64-bit ELF without a PT_INTERP (dynamic loader) program header."""
    data = path.read_bytes()
    if data[:5] != b"\x7fELF\x02":
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for index in range(phnum):
        (p_type,) = struct.unpack_from("<I", data, phoff + index * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


# compile(source, out): builds the static UDP echo with the root's gcc (the lab runs it inside the root)
Compiler = Callable[[Path, Path], None]
UDPECHO_CFLAGS = ("-static", "-Os", "-s")


def busybox_applets(busybox: Path) -> list[str]:
    """Applet paths relative to / (``bin/sh``, ``sbin/acpid``, ...); busybox is static, so the
    root's binary runs here."""
    out = run([str(busybox), "--list-full"], timeout=10).stdout
    return [line.strip().lstrip("/") for line in out.splitlines() if line.strip()]


# --- newc cpio --------------------------------------------------------------------------------


@dataclass
class CpioWriter:
    """A minimal newc (SVR4, no CRC) archive writer; owner root, fixed mtime for reproducibility."""

    chunks: list[bytes] = field(default_factory=list)
    inode: int = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(encoded),
            0,
        )
        header = b"070701" + b"".join(f"{value:08x}".encode() for value in fields)
        self.inode += 1
        self.chunks.append(header + encoded + _pad(len(header) + len(encoded)))
        self.chunks.append(data + _pad(len(data)))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self.chunks)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _parents(paths: Iterable[str]) -> list[str]:
    dirs: set[str] = set()
    for path in paths:
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:depth]))
    return sorted(dirs, key=lambda d: (d.count("/"), d))


def lab_conf(modules: Sequence[str]) -> str:
    return (
        f'MODULES="{" ".join(modules)}"\n'
        f'HTTP_PORTS="{" ".join(map(str, HTTP_PORTS))}"\n'
        f'UDP_PORTS="{" ".join(map(str, UDP_PORTS))}"\n'
    )


def build_initramfs(modules: Sequence[tuple[str, Path]], udpecho: Path, busybox: Path) -> bytes:
    """The gzip-compressed newc initramfs."""
    files: dict[str, tuple[bytes, int]] = {
        "init": (INIT_SCRIPT.read_bytes(), 0o755),
        "bin/busybox": (busybox.read_bytes(), 0o755),
        "bin/udpecho": (udpecho.read_bytes(), 0o755),
        "etc/udhcpc.script": (UDHCPC_SCRIPT.read_bytes(), 0o755),
        "etc/acpi/PWRF/00000080": (POWER_BUTTON_ACTION.encode(), 0o755),
        "etc/lab.conf": (lab_conf([name for name, _ in modules]).encode(), 0o644),
    }
    for name, path in modules:
        files[f"modules/{name}.ko"] = (read_module(path), 0o644)
    links = {applet: "/bin/busybox" for applet in busybox_applets(busybox) if applet not in files}
    empty_dirs = ["dev", "proc", "sys", "tmp", "run", "root", "var", "var/log", "www"]
    writer = CpioWriter()
    for directory in _parents([*files, *links, *(f"{d}/x" for d in empty_dirs)]):
        writer.directory(directory)
    writer.char_device("dev/console", 5, 1)
    writer.char_device("dev/null", 1, 3, 0o666)
    for name in sorted(files):
        data, mode = files[name]
        writer.file(name, data, mode)
    for name in sorted(links):
        writer.symlink(name, links[name])
    return gzip.compress(writer.finish(), compresslevel=6, mtime=0)


# --- cache ------------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def image_key(kernel: KernelSource, modules: Sequence[tuple[str, Path]], busybox: Path) -> str:
    """A hash of every input of the image."""
    digest = hashlib.sha256(BUILD_VERSION.encode())
    inputs = [kernel.image, busybox, INIT_SCRIPT, UDHCPC_SCRIPT, UDPECHO_SOURCE]
    inputs += [path for _, path in modules]
    for path in inputs:
        digest.update(path.name.encode() + b"\0")  # not the whole path: the root's moves with its key
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(lab_conf([name for name, _ in modules]).encode())
    digest.update(POWER_BUTTON_ACTION.encode())
    digest.update(" ".join(UDPECHO_CFLAGS).encode())
    return digest.hexdigest()[:16]


def check_prerequisites(root: Path) -> list[str]:
    """What root lacks to build a guest image (empty when everything is there)."""
    missing = []
    busybox = root / BUSYBOX.relative_to("/")
    if not busybox.is_file():
        missing.append(f"{busybox} (busybox-static)")
    elif not is_static_elf(busybox):
        missing.append(f"a static {busybox} (busybox-static, not busybox)")
    if not (root / "usr/bin/gcc").exists():
        missing.append(f"gcc in {root}")
    elif not any((root / d / "libc.a").is_file() for d in ("usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/lib")):
        missing.append(f"libc.a (libc6-dev) in {root}")
    try:
        find_kernel(root)
    except LabError as exc:
        missing.append(str(exc))
    return missing


def build_guest_image(root: Path, compile_udpecho: Compiler, cache: Path | None = None) -> GuestImage:
    """Return the cached guest image for root's kernel and busybox, building it when inputs changed."""
    kernel = find_kernel(root)
    modules = resolve_modules(kernel.modules_dir)
    busybox = root / BUSYBOX.relative_to("/")
    key = image_key(kernel, modules, busybox)
    images = cache or cache_dir()
    target = images / f"guest-{key}"
    image = GuestImage(target / "vmlinuz", target / "initrd.img", kernel.version, key)
    if image.kernel.is_file() and image.initrd.is_file():
        os.utime(target)
        return image
    images.mkdir(parents=True, exist_ok=True)
    images.chmod(0o755)
    fd = os.open(images / "guest.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one build at a time (test runs side by side); the next finds it built
        if image.kernel.is_file() and image.initrd.is_file():
            return image
        prune_cache(images, keep=target)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=images))
        try:
            _build_into(staging, kernel, modules, busybox, compile_udpecho)
            staging.rename(target)  # complete or absent
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        os.close(fd)
    return image


def prune_cache(root: Path, keep: Path, max_age: float = CACHE_MAX_AGE) -> None:
    """Remove other images not used for max_age seconds (each use touches its directory)."""
    now = time.time()
    for entry in root.glob("guest-*"):
        with contextlib.suppress(OSError):
            if entry != keep and now - entry.stat().st_mtime > max_age:
                shutil.rmtree(entry)


def _build_into(
    staging: Path, kernel: KernelSource, modules: Sequence[tuple[str, Path]], busybox: Path, compile_udpecho: Compiler
) -> None:
    udpecho = staging / "udpecho"
    compile_udpecho(UDPECHO_SOURCE, udpecho)
    if not is_static_elf(udpecho):
        raise LabError(f"{udpecho}: not a static executable")
    shutil.copyfile(kernel.image, staging / "vmlinuz")
    (staging / "initrd.img").write_bytes(build_initramfs(modules, udpecho, busybox))
    (staging / "kernel-version").write_text(kernel.version + "\n")
    for path in staging.iterdir():
        path.chmod(0o644)
    staging.chmod(0o755)
