"""The firewall managers beside libvirt (issue 15), each set up inside a booted lab host as its
users typically run it, from the packages of the host's own release (tests/lab/rootfs.py puts
them in every root with their services disabled).

- ``docker``: docker.service enabled and started by systemd while forwarding is off, so that
  Docker turns forwarding on itself and sets filter FORWARD's policy to DROP (LAB-NOTES: it
  does so only then; Docker 28 and later always do), its iptables integration as Debian ships
  it, and one container (``--restart unless-stopped``) publishing ``DOCKER_PORT``. No registry
  is reachable: the image is ``docker import``-ed from a tar of the root's busybox-static.
- ``firewalld``: firewalld.service with its nftables backend (Debian's default), the uplink in
  zone ``public`` (permanent), and libvirt's network started again so that libvirt puts its
  bridge into its zone ``libvirt`` as it does at every network start under firewalld.
  ``firewalld-strict``: the same with ``StrictForwardPorts=yes`` (firewalld 2.3, Debian 13).
- ``ufw``: ``DEFAULT_FORWARD_POLICY="DROP"`` (Debian's default), ssh allowed, ``ufw --force
  enable``.
- ``nftables``: an admin's ``/etc/nftables.conf`` (Debian's template's shape, ``flush ruleset``
  first) whose ``inet filter`` drops forwarded packets by policy and whose input drops all but
  ssh, loopback, replies, and the DHCP and DNS libvirt's guests ask the host for (without that
  line no guest gets a lease, with or without us); nftables.service enabled and the host booted
  again, so that the file is loaded before libvirtd starts, as at every boot.

What the box needs beside an admin's host, and only this: Docker's default runtime is
tests/lab/runc_nocgroups.py (this machine's cgroup v1 controllers are read-only in a box; the
container runs without cgroups, its network as Docker makes it).

``rules(lab, name)`` is the neighbour's own part of the ruleset, normalised (``normalise``:
no counters, handles or comment lines), for before/after comparisons.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.lab.host import HOST_UPLINK, Lab
from tests.lab.proc import LabError

DOCKER_IMAGE = "lab/busybox:1"
DOCKER_CONTAINER = "lab-web"
DOCKER_PORT = 8080  # published on every host address (docker-proxy listens there too)
DOCKER_BODY = "docker-web\n"
RUNC_WRAPPER = Path(__file__).parents[1] / "lab" / "runc_nocgroups.py"
RUNC_IN_BOX = "/usr/local/sbin/runc-nocgroups"
DAEMON_JSON = json.dumps({"runtimes": {"runc-nocgroups": {"path": RUNC_IN_BOX}}, "default-runtime": "runc-nocgroups"})
FIREWALLD_CONF = Path("/etc/firewalld/firewalld.conf")
UFW_DEFAULTS = Path("/etc/default/ufw")
NFTABLES_CONF = Path("/etc/nftables.conf")
ADMIN_NFTABLES_CONF = """\
#!/usr/sbin/nft -f
# An admin's hardened host (libvirt-portfwd tests): forwarding dropped by policy, input only ssh.
flush ruleset

table inet filter {
\tchain input {
\t\ttype filter hook input priority filter; policy drop;
\t\tiif "lo" accept
\t\tct state established,related accept
\t\ttcp dport 22 accept
\t\tiifname "virbr0" udp dport { 53, 67 } accept
\t\tiifname "virbr0" tcp dport 53 accept
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy drop;
\t}
\tchain output {
\t\ttype filter hook output priority filter; policy accept;
\t}
}
"""
READY_TIMEOUT = 60.0

# --- normalising a ruleset ----------------------------------------------------------------------

_IPT_COUNTERS = re.compile(r"\[\d+:\d+\]")
_NFT_COUNTERS = re.compile(r"counter packets \d+ bytes \d+")
_NFT_HANDLE = re.compile(r"\s*# handle \d+$")
_NFT_EXPIRES = re.compile(r" expires [\dhms.]+")


def normalise(text: str) -> list[str]:
    """``iptables-save`` or ``nft [-a] list ...`` output as lines that compare across time: no
    comment lines (iptables-save's dates), counters zeroed, no handles or expiry times, no
    indentation or blank lines."""
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = _IPT_COUNTERS.sub("[0:0]", line)
        line = _NFT_COUNTERS.sub("counter", line)
        line = _NFT_EXPIRES.sub("", _NFT_HANDLE.sub("", line))
        lines.append(line)
    return lines


def iptables_save(lab: Lab) -> list[str]:
    """The host's iptables, normalised, each line prefixed with its table."""
    lines, table = [], ""
    for line in normalise(lab.run_in_host(["iptables-save"]).stdout):
        if line.startswith("*"):
            table = line[1:]
        elif line != "COMMIT":
            lines.append(f"{table} {line}")
    return lines


def nft_tables(lab: Lab) -> list[tuple[str, str]]:
    """(family, name) of every nftables table in the host."""
    listing = lab.run_in_host(["nft", "list", "tables"]).stdout
    return [(words[1], words[2]) for words in (line.split() for line in listing.splitlines()) if len(words) == 3]


def nft_table(lab: Lab, family: str, table: str) -> list[str]:
    listing = lab.run_in_host(["nft", "list", "table", family, table], check=False)
    return normalise(listing.stdout) if listing.returncode == 0 else []


def rules(lab: Lab, name: str) -> list[str]:
    """The neighbour's own rules, normalised (NEIGHBOURS[name].own)."""
    return NEIGHBOURS[name].own(lab)


def _docker_rules(lab: Lab) -> list[str]:
    found = []
    for line in iptables_save(lab):
        if re.search(r"DOCKER|docker0", line) or line == "filter :FORWARD DROP [0:0]":
            found.append(line)
    return found


def _ufw_rules(lab: Lab) -> list[str]:
    policies = re.compile(r"^filter :(INPUT|FORWARD|OUTPUT) ")
    return [line for line in iptables_save(lab) if "ufw" in line or policies.match(line)]


def _firewalld_rules(lab: Lab) -> list[str]:
    return [
        f"{family} {table}: {line}"
        for family, table in nft_tables(lab)
        if table == "firewalld"
        for line in nft_table(lab, family, table)
    ]


def _nftables_rules(lab: Lab) -> list[str]:
    return [f"inet filter: {line}" for line in nft_table(lab, "inet", "filter")]


# --- setting them up -------------------------------------------------------------------------------


def _wait(lab: Lab, argv: list[str], what: str, timeout: float = READY_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while True:
        result = lab.run_in_host(argv, check=False, timeout=60)
        if result.returncode == 0:
            return result.stdout
        if time.monotonic() > deadline:
            raise LabError(f"{what} within {timeout:.0f} s: {' '.join(argv)}: {result.stderr.strip()}")
        time.sleep(0.5)


def busybox_tar(lab: Lab) -> bytes:
    """A one-binary image: the root's busybox-static, ``/bin/sh``, and ``/www/index.html``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for directory in ("bin", "www", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        busybox = lab.path("/bin/busybox").read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(busybox), 0o755
        tar.addfile(info, io.BytesIO(busybox))
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
        body = DOCKER_BODY.encode()
        page = tarfile.TarInfo("www/index.html")
        page.size = len(body)
        tar.addfile(page, io.BytesIO(body))
    return out.getvalue()


def setup_docker(lab: Lab) -> None:
    """Docker as Debian ships it, started with forwarding off (it turns it on: FORWARD DROP),
    and one container publishing DOCKER_PORT."""
    wrapper = lab.path(RUNC_IN_BOX)
    wrapper.write_text(RUNC_WRAPPER.read_text())
    wrapper.chmod(0o755)
    lab.path("/etc/docker").mkdir(exist_ok=True)
    lab.path("/etc/docker/daemon.json").write_text(DAEMON_JSON)
    lab.run_in_host(["sysctl", "-qw", "net.ipv4.ip_forward=0"])
    lab.box.systemctl("enable", "--now", "docker.service")
    _wait(lab, ["docker", "version"], "dockerd did not answer")
    forward = lab.run_in_host(["iptables", "-S", "FORWARD"]).stdout.splitlines()[0]
    if forward != "-P FORWARD DROP":
        raise LabError(f"Docker left filter FORWARD's policy as {forward!r} (expected DROP)")
    lab.path("/root/lab-busybox.tar").write_bytes(busybox_tar(lab))
    lab.run_in_host(["docker", "import", "/root/lab-busybox.tar", DOCKER_IMAGE])
    run = ["docker", "run", "-d", "--name", DOCKER_CONTAINER, "--restart", "unless-stopped"]
    httpd = ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]
    lab.run_in_host([*run, "-p", f"{DOCKER_PORT}:80", DOCKER_IMAGE, *httpd], timeout=120)
    wait_docker_port(lab)


def docker_answers(lab: Lab) -> bool:
    return lab.http_probe(lab.client_ns, lab.host_addr, DOCKER_PORT, timeout=1.0).answer == DOCKER_BODY.encode()


def wait_docker_port(lab: Lab, timeout: float = READY_TIMEOUT) -> float:
    """The container's published port answers from the client; the seconds it took."""
    began = time.monotonic()
    while not docker_answers(lab):
        if time.monotonic() - began > timeout:
            raise LabError(f"Docker's published port {DOCKER_PORT} did not answer the client within {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - began


def restart_docker(lab: Lab) -> None:
    lab.box.systemctl("restart", "docker.service")
    _wait(lab, ["docker", "version"], "dockerd did not answer after its restart")


def firewalld_has_strict(lab: Lab) -> bool:
    """Whether the host's firewalld knows StrictForwardPorts (firewalld 2.3 and later)."""
    return re.search(r"^#?\s*StrictForwardPorts", lab.path(FIREWALLD_CONF).read_text(), re.M) is not None


def setup_firewalld(lab: Lab, *, strict: bool = False) -> None:
    """firewalld (nftables backend) running, the uplink in zone public, libvirt's bridge in its
    zone libvirt; ``strict``: StrictForwardPorts=yes."""
    conf = lab.path(FIREWALLD_CONF)
    text = conf.read_text()
    if not re.search(r"^FirewallBackend=nftables$", text, re.M):
        raise LabError(f"{FIREWALLD_CONF}: not the nftables backend as Debian ships it")
    if strict:
        if not firewalld_has_strict(lab):
            raise LabError(f"{FIREWALLD_CONF}: this firewalld has no StrictForwardPorts")
        conf.write_text(re.sub(r"^StrictForwardPorts=.*$", "StrictForwardPorts=yes", text, flags=re.M))
    lab.box.systemctl("enable", "--now", "firewalld.service")
    _wait(lab, ["firewall-cmd", "--state"], "firewalld did not run")
    lab.run_in_host(["firewall-cmd", "--permanent", "--zone=public", f"--add-interface={HOST_UPLINK}"])
    reload_firewalld(lab)
    lab.restart_network()  # libvirt puts its bridge into zone "libvirt" at network start
    zone = lab.run_in_host(["firewall-cmd", f"--get-zone-of-interface={lab.bridge}"], check=False).stdout.strip()
    uplink = lab.run_in_host(["firewall-cmd", f"--get-zone-of-interface={HOST_UPLINK}"], check=False).stdout.strip()
    if (zone, uplink) != ("libvirt", "public"):
        raise LabError(f"firewalld zones: {lab.bridge} in {zone!r}, {HOST_UPLINK} in {uplink!r}")


def reload_firewalld(lab: Lab) -> None:
    lab.run_in_host(["firewall-cmd", "--reload"], timeout=120)


def setup_ufw(lab: Lab) -> None:
    """ufw enabled, forwarding dropped by policy (Debian's default, checked), ssh allowed."""
    defaults = lab.path(UFW_DEFAULTS)
    text = defaults.read_text()
    if not re.search(r'^DEFAULT_FORWARD_POLICY="DROP"$', text, re.M):
        defaults.write_text(re.sub(r"^DEFAULT_FORWARD_POLICY=.*$", 'DEFAULT_FORWARD_POLICY="DROP"', text, flags=re.M))
    lab.run_in_host(["ufw", "allow", "22/tcp"])
    lab.run_in_host(["ufw", "--force", "enable"], timeout=120)


def reload_ufw(lab: Lab) -> None:
    lab.run_in_host(["ufw", "reload"], timeout=120)


def setup_nftables(lab: Lab) -> None:
    """The admin's /etc/nftables.conf, nftables.service enabled; the host booted again so that
    the file is loaded before libvirtd starts, as at every boot."""
    lab.path(NFTABLES_CONF).write_text(ADMIN_NFTABLES_CONF)
    lab.box.systemctl("enable", "nftables.service")
    lab.reboot()
    state = lab.box.systemctl("is-active", "nftables.service", check=False).stdout.strip()
    if state != "active" or not nft_table(lab, "inet", "filter"):
        raise LabError(f"nftables.service is {state!r} after boot")


def restart_nftables(lab: Lab) -> None:
    lab.box.systemctl("restart", "nftables.service")


NFT_INSERT = re.compile(r"^nft insert rule (?P<family>\S+) (?P<table>\S+) (?P<chain>\S+) (?P<rule>.+)$")


def persist_nft_rule(lab: Lab, line: str) -> None:
    """Put the rule of an ``nft insert rule FAMILY TABLE CHAIN RULE`` line into /etc/nftables.conf,
    first in that chain, as an admin makes a live rule permanent (the file is what
    ``systemctl restart nftables`` and every boot load). Only the admin's file's own chains."""
    insert = NFT_INSERT.match(line)
    if insert is None:
        raise LabError(f"not an nft insert rule line: {line!r}")
    conf = lab.path(NFTABLES_CONF)
    text = conf.read_text()
    table = re.search(rf"^table {insert['family']} {insert['table']} {{$", text, re.M)
    chain = table and re.compile(rf"^\tchain {insert['chain']} {{\n\t\ttype [^\n]*\n", re.M).search(text, table.end())
    if not chain:
        raise LabError(f"{NFTABLES_CONF} has no base chain {insert['family']} {insert['table']} {insert['chain']}")
    conf.write_text(text[: chain.end()] + f"\t\t{insert['rule']}\n" + text[chain.end() :])
    lab.run_in_host(["nft", "-c", "-f", str(NFTABLES_CONF)])  # the file still loads


@dataclass(frozen=True)
class Neighbour:
    """One neighbour: how it is set up, its documented reload or restart, its own rules."""

    name: str
    setup: Callable[[Lab], None]
    reload: Callable[[Lab], None]
    reload_command: str  # what the admin types
    own: Callable[[Lab], list[str]]


NEIGHBOURS = {
    n.name: n
    for n in (
        Neighbour("docker", setup_docker, restart_docker, "systemctl restart docker", _docker_rules),
        Neighbour("firewalld", setup_firewalld, reload_firewalld, "firewall-cmd --reload", _firewalld_rules),
        Neighbour(
            "firewalld-strict",
            lambda lab: setup_firewalld(lab, strict=True),
            reload_firewalld,
            "firewall-cmd --reload",
            _firewalld_rules,
        ),
        Neighbour("ufw", setup_ufw, reload_ufw, "ufw reload", _ufw_rules),
        Neighbour("nftables", setup_nftables, restart_nftables, "systemctl restart nftables", _nftables_rules),
        Neighbour("none", lambda lab: None, lambda lab: None, "(nothing)", lambda lab: []),  # the control
    )
}
