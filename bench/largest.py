"""The CPU of one ``plan`` for the largest inputs the limits accept (libvirt_portfwd/limits.py).

    /usr/bin/python3 bench/largest.py        (as root: the plans run as nobody, renders are pure)

Every input at its limit at once: the domain XML (4 MiB, with either the widest forward the rule
limit accepts: every TCP port through a source network, or the most forwards, ranges and sources
the limits accept), the config (128 KiB, parsed cold: no cache), the lease file (2 MiB) and the network
status (1 MiB). Each row is the user + system CPU of the CLI process (Debian's python3 through
hooks/boot.py), the interpreter's start and imports included; the best of five.
"""

import json
import os
import pwd
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from libvirt_portfwd import limits  # noqa: E402

UUID = "d0a9822c-a65d-5f01-aecc-d344520d127f"
MAC = "52:54:00:6b:3c:01"


def domain_xml(widest: bool) -> bytes:
    """``widest``: every TCP port through a source network, all of limits.RULES in one forward;
    else as many forwards, ranges and sources as the limits allow (each range one port)."""
    if widest:
        body = '<portfwd:range start="1" end="65535"/>'
        forwards = [f'<portfwd:portForward proto="tcp" source="0.0.0.0/0">{body}</portfwd:portForward>']
    else:
        sources = ",".join(f"198.51.100.{i}/32" for i in range(limits.SOURCES.value))
        each = limits.RANGES.value // limits.FORWARDS.value
        forwards = []
        for n in range(limits.FORWARDS.value):
            body = "".join(f'<portfwd:range start="{1000 + n * 100 + i}" to="{2000 + i}"/>' for i in range(each))
            forwards.append(f'<portfwd:portForward proto="udp" source="{sources}">{body}</portfwd:portForward>')
    head = (
        f"<domain type='kvm'><name>big1</name><uuid>{UUID}</uuid><metadata>"
        f'<portfwd:portfwd xmlns:portfwd="urn:libvirt-portfwd:1">{"".join(forwards)}</portfwd:portfwd></metadata>'
        f"<devices><interface type='network'><mac address='{MAC}'/><source network='default' bridge='virbr0'/>"
        "</interface></devices>"
    )
    tail = "</domain>"
    pad = limits.DOMAIN_XML.value - len(head) - len(tail) - len("<!--  -->")
    return f"{head}<!-- {'x' * pad} -->{tail}".encode()


def config() -> bytes:
    text = "on_error: allow\ndomains:\n"
    n = 0
    while True:
        forward = f"{{proto: tcp, source: [198.51.100.0/24], ranges: [{{start: {2000 + n % 60000}, to: 22}}]}}"
        entry = f"  vm{n}:\n    - {forward}\n"
        if len(text) + len(entry) > limits.CONFIG_FILE.value - 2:
            return (text + "#" * (limits.CONFIG_FILE.value - len(text) - 1) + "\n").encode()
        text += entry
        n += 1


def leases() -> bytes:
    entries = [{"ip-address": "192.168.122.50", "mac-address": MAC, "expiry-time": 4102444800}]
    size, i = 100, 0
    while size < limits.LEASE_FILE.value - 200:
        mac = f"52:54:01:{i // 65536 % 256:02x}:{i // 256 % 256:02x}:{i % 256:02x}"
        entries.append(
            {"ip-address": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", "mac-address": mac, "expiry-time": 0}
        )
        size += len(json.dumps(entries[-1])) + 2
        i += 1
    text = json.dumps(entries)
    return (text[:-1] + " " * (limits.LEASE_FILE.value - len(text)) + "]").encode()


def network(firewall: str) -> bytes:
    hosts = []
    size = 0
    i = 0
    while size < limits.NETWORK_XML.value - 2000:
        mac = f"52:54:02:{i // 65536 % 256:02x}:{i // 256 % 256:02x}:{i % 256:02x}"
        host = f"<host mac='{mac}' ip='192.168.{122 + i // 250 % 2}.{i % 250 + 2}'/>"
        hosts.append(host)
        size += len(host)
        i += 1
    text = (
        f"<networkstatus><firewall backend='{firewall}'/><network><name>default</name><forward mode='nat'/>"
        "<bridge name='virbr0'/><ip address='192.168.122.1' netmask='255.255.254.0'>"
        f"<dhcp>{''.join(hosts)}</dhcp></ip>"
        "</network></networkstatus>"
    )
    end = text.rindex("</networkstatus>")
    return (text[:end] + " " * (limits.NETWORK_XML.value - len(text)) + text[end:]).encode()


def cpu_of(argv: list[str], stdin: bytes) -> tuple[float, int, int]:
    """User + system CPU of the process, its exit code and how much it printed."""
    nobody = pwd.getpwnam("nobody")

    def drop() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, input=stdin, capture_output=True, preexec_fn=drop, timeout=120, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode(errors="replace"))
    return cpu, proc.returncode, len(proc.stdout)


def main() -> int:
    if os.geteuid() != 0:
        print("run as root (the plans run as nobody)")
        return 2
    base = Path(tempfile.mkdtemp(prefix="pfbench-"))
    try:
        base.chmod(0o755)
        sizes = {"domain XML": limits.DOMAIN_XML.value}
        print(f"{'backend':10} {'forwards':9} {'cpu (best of 5)':>16} {'exit':>5} {'printed':>10}")
        for backend, widest in (("nftables", True), ("nftables", False), ("iptables", True), ("iptables", False)):
            xml = domain_xml(widest)
            root = base / backend
            files = {
                "etc/libvirt-portfwd/config.yaml": config(),
                "run/libvirt/network/default.xml": network(backend),
                "var/lib/libvirt/dnsmasq/virbr0.status": leases(),
            }
            for relative, data in files.items():
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                (root / relative).write_bytes(data)
                sizes[relative] = len(data)
            for path in [root, *root.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
            boot = str(REPO / "hooks/boot.py")
            argv = ["/usr/bin/python3", "-I", "-S", boot, "cli", "--root", str(root), "plan", "-"]
            runs = [cpu_of(argv, xml) for _ in range(5)]
            cpu, code, printed = min(runs)
            print(f"{backend:10} {'widest' if widest else 'most':9} {cpu:15.3f}s {code:5} {printed:10}")
        for name, size in sizes.items():
            print(f"  {name}: {size} bytes")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
