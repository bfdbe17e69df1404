"""Where ./install.sh puts things and what it needs, for the tests that run it: inside a
tests/sandbox.py view of the machine (tests/netns/test_install*.py, test_failsafe.py), or inside
the e2e lab's root file system (tests/lab). These paths are the sandbox's or the root's, never the
machine's own."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALL_SH = REPO / "install.sh"

HOOK = Path("/etc/libvirt/hooks/qemu.d/libvirt-portfwd")
NETWORK_HOOK = Path("/etc/libvirt/hooks/network.d/libvirt-portfwd")
UNIT_DIR = Path("/etc/systemd/system")
UNITS = (UNIT_DIR / "libvirt-portfwd.service", UNIT_DIR / "libvirt-portfwd-sync.service")
PREFIX = Path("/opt/libvirt-portfwd")
CURRENT = PREFIX / "current"
RELEASES = PREFIX / "releases"
CONFIG = Path("/etc/libvirt-portfwd/config.yaml")
CLI = Path("/usr/local/sbin/libvirt-portfwd")
SYSCTL = Path("/etc/sysctl.d/60-libvirt-portfwd.conf")
RUN_DIR = Path("/run/libvirt-portfwd")
INSTALLED_PATHS = (HOOK, NETWORK_HOOK, *UNITS, PREFIX, CONFIG, CLI, SYSCTL, RUN_DIR)
# what libvirtd gives hooks: its own PATH, LC_ALL=C, HOME and PWD, nothing else
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOOK_ENV = ("env", "-i", f"PATH={HOOK_PATH}", "LC_ALL=C", "HOME=/root", "PWD=/")
# what install.sh installs from a checkout
SOURCES = ("install.sh", "hooks", "libvirt_portfwd", "templates", "systemd")

# The Debian packages install.sh needs, so that it runs offline inside the lab's root file system
# (tests/lab/rootfs.py installs them all; tests/unit/test_rootfs.py checks install.sh asks for no
# other).
INSTALL_SH_PACKAGES = (
    "python3",
    "python3-lxml",
    "python3-jinja2",
    "python3-yaml",
    "python3-libvirt",
    "iptables",
    "nftables",
    "procps",
    "conntrack",
)
