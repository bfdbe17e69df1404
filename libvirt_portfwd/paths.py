"""Every path the project reads or writes, in one place. Stdlib os only (hook fast path).

``LIBVIRT_PORTFWD_ROOT`` (tests) prefixes every system path, like a chroot for files.
"""

import os

CONFIG = "/etc/libvirt-portfwd/config.yaml"
RUN_DIR = "/run/libvirt-portfwd"  # state and lock live as long as the rules: until reboot
DNSMASQ_DIR = "/var/lib/libvirt/dnsmasq"
NETWORK_DIR = "/run/libvirt/network"
QEMU_RUN_DIR = "/run/libvirt/qemu"
# The kernel's views, never under the root: they show the reading process's own network
# namespace (the tests run the code inside namespaces of their own).
PROC = "/proc"
PROC_NET = "/proc/net"  # listening sockets (listeners.py)
EPHEMERAL_PORTS = "/proc/sys/net/ipv4/ip_local_port_range"
HOOK_DIR = "/etc/libvirt/hooks"  # libvirt's; ours are <kind>.d/libvirt-portfwd (install.sh HOOK_DIR)
HOOK_NAME = "libvirt-portfwd"
SYSCTL_FILE = "/etc/sysctl.d/60-libvirt-portfwd.conf"  # install.sh writes net.ipv4.ip_forward = 1 there
SYSTEMD_DIR = "/run/systemd/system"  # exists where systemd runs (sd_booted)


def is_uuid(text: str) -> bool:
    """A domain UUID in the form our file names use (8-4-4-4-12, lower-case hex): nothing else
    may become part of a record's or an intent's path."""
    parts = text.split("-")
    return [len(p) for p in parts] == [8, 4, 4, 4, 12] and all(c in "0123456789abcdef" for c in "".join(parts))


class Paths:
    """Resolved locations; ``config`` may be overridden (``--config``)."""

    __slots__ = (
        "config",
        "dnsmasq_dir",
        "hook_dir",
        "network_dir",
        "qemu_run_dir",
        "root",
        "run_dir",
        "sysctl_file",
        "systemd_dir",
    )

    def __init__(self, root: str | None = None, config: str | None = None) -> None:
        root = os.environ.get("LIBVIRT_PORTFWD_ROOT", "") if root is None else root
        self.root = root  # "" on a real host; a process we start gets it as LIBVIRT_PORTFWD_ROOT

        def under(path: str) -> str:
            return os.path.join(root, path.lstrip("/")) if root else path

        self.config = config or under(CONFIG)
        self.run_dir = under(RUN_DIR)
        self.dnsmasq_dir = under(DNSMASQ_DIR)
        self.network_dir = under(NETWORK_DIR)
        self.qemu_run_dir = under(QEMU_RUN_DIR)
        self.hook_dir = under(HOOK_DIR)
        self.sysctl_file = under(SYSCTL_FILE)
        self.systemd_dir = under(SYSTEMD_DIR)

    def hook(self, kind: str) -> str:
        """Our installed libvirt hook of ``kind`` (qemu or network)."""
        return os.path.join(self.hook_dir, f"{kind}.d", HOOK_NAME)

    @property
    def state_dir(self) -> str:
        return os.path.join(self.run_dir, "domains")

    @property
    def lock(self) -> str:
        return os.path.join(self.run_dir, "lock")

    @property
    def index(self) -> str:
        return os.path.join(self.run_dir, "index.json")

    @property
    def service_socket(self) -> str:
        """The resident service's socket, root's only: the hooks' warm path (warm.py)."""
        return os.path.join(self.run_dir, "service.sock")

    @property
    def service_status(self) -> str:
        """What the running service has done (service.py): its pid, requests, rebuilds."""
        return os.path.join(self.run_dir, "service.json")

    @property
    def config_cache(self) -> str:
        return os.path.join(self.run_dir, "config.cache")

    def record(self, uuid: str) -> str:
        return os.path.join(self.state_dir, f"{uuid}.json")

    @property
    def intent_dir(self) -> str:
        return os.path.join(self.run_dir, "intents")

    def intent(self, uuid: str, taken: bool = False) -> str:
        return os.path.join(self.intent_dir, f"{uuid}.{'taken' if taken else 'json'}")

    def has_intent(self, uuid: str) -> bool:
        """An intent of this domain not carried out yet (state.py; os only: the hook's fast path)."""
        return os.path.exists(self.intent(uuid)) or os.path.exists(self.intent(uuid, taken=True))
