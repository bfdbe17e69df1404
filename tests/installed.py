"""Where ./install.sh puts things, for the tests that run it (tests/netns/test_install*.py and
the e2e lab). Test namespaces reach no package index: PIP_OFFLINE points pip (its own settings;
install.sh is unchanged) at the wheelhouse tests/run builds."""

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
