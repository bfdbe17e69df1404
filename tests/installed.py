"""Where ./install.sh puts things and what it needs, for the tests that run it
(tests/netns/test_install*.py on the machine, the e2e lab inside its root file system). Test
namespaces reach no package index: PIP_OFFLINE points pip (its own settings; install.sh is
unchanged) at the wheelhouse tests/run builds; inside the lab's root see INSTALL_ENV."""

from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALL_SH = REPO / "install.sh"
WHEELS = REPO / ".cache" / "wheels"
PIP_OFFLINE = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELS)}

HOOK = Path("/etc/libvirt/hooks/qemu.d/libvirt-portfwd")
NETWORK_HOOK = Path("/etc/libvirt/hooks/network.d/libvirt-portfwd")
UNIT_DIR = Path("/etc/systemd/system")
UNITS = (UNIT_DIR / "libvirt-portfwd-watch.service", UNIT_DIR / "libvirt-portfwd-sync.service")
PREFIX = Path("/opt/libvirt-portfwd")
CONFIG = Path("/etc/libvirt-portfwd/config.yaml")
CLI = Path("/usr/local/sbin/libvirt-portfwd")
SYSCTL = Path("/etc/sysctl.d/60-libvirt-portfwd.conf")
RUN_DIR = Path("/run/libvirt-portfwd")
INSTALLED_PATHS = (HOOK, NETWORK_HOOK, *UNITS, PREFIX, CONFIG, CLI, SYSCTL, RUN_DIR)

# The Debian packages install.sh needs, so that it runs offline inside the lab's root file system
# (tests/lab/rootfs.py installs them all; tests/unit/test_rootfs.py checks install.sh asks for no
# other). Today's install.sh builds a venv with pip; the next one uses Debian's python3 packages.
INSTALL_SH_PACKAGES = (
    "python3",
    "python3-lxml",
    "python3-jinja2",
    "python3-yaml",
    "python3-libvirt",
    "iptables",
    "nftables",
    "procps",
    # today's venv install.sh (drop with it)
    "python3-venv",
    "python3-dev",
    "python3-setuptools",
    "python3-wheel",
    "gcc",
    "pkg-config",
    "libvirt-dev",
)

# Inside the lab's root (tests/lab/rootfs.py: Debian's python3 packages, no index, no wheelhouse).
# Today's install.sh makes a venv and pip-installs the checkout into it: the lab makes that venv
# first, with Debian's site-packages visible, so that pip finds lxml, jinja2, yaml and libvirt
# installed and builds the checkout with Debian's setuptools. Drop with the venv install.sh.
VENV = PREFIX / "venv"
INSTALL_ENV = {"PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"}


def install_makes_venv() -> bool:
    return "python3 -m venv" in INSTALL_SH.read_text()


def prepare_install(run: Callable[[Sequence[str]], object]) -> None:
    """What the lab does inside its root before install.sh (run: runs argv there)."""
    if install_makes_venv():
        run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(VENV)])
