"""The YAML config: defaults, validation with key paths, policy, forwards by name or UUID, cache."""

from __future__ import annotations

import json
import marshal
import os
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import yaml
from pytest_mock import MockerFixture

from libvirt_portfwd import config as config_module
from libvirt_portfwd import configcache
from libvirt_portfwd.backendnames import CHOICES
from libvirt_portfwd.config import DEFAULT_LEASE_WAIT, Config, HostPortsPolicy, MetadataPolicy, load_config
from libvirt_portfwd.errors import InputError
from libvirt_portfwd.forward import PortRange

from .helpers import CONFIG_PATH, UUID, config

P = CONFIG_PATH


def error_of(document: object) -> str:
    with pytest.raises(InputError) as caught:
        config(document)
    message = str(caught.value)
    assert message.startswith("libvirt-portfwd: ") and "\n" not in message
    return message


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_missing_file_is_defaults(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yaml")
    assert load_config(path) == Config(path=path)
    c = load_config(path)
    assert (c.backend, c.address, c.dev, c.lease_wait, c.on_error) == ("auto", None, None, DEFAULT_LEASE_WAIT, "allow")
    assert c.metadata == MetadataPolicy(enabled=True, ports=(PortRange(1, 65535, 1),), guest_address=False)
    assert c.domains == {}


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_file_is_defaults(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert load_config(path) == Config(path=path)


def test_full_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
backend: iptables
address: 203.0.113.10
dev: eth0
lease_wait: 30
on_error: block
metadata:
  enabled: true
  ports: [1024-65535, 443]
  guest_address: true
domains:
  web1:
    - proto: tcp
      ranges:
        - {{start: 20443, to: 443}}
  {UUID.upper()}:
    - proto: udp
      address: 203.0.113.11
      source: [198.51.100.0/24, 192.0.2.0/24]
      mac: 52:54:00:6b:3c:02
      guest-address: 192.168.122.9
      dev: eth1
      ranges:
        - start: 5000
          end: 5010
          to: 6000
        - {{start: 5005, exclude: yes}}
""",
    )
    c = load_config(path)
    assert (c.backend, c.address, c.dev, c.lease_wait, c.on_error) == (
        "iptables",
        IPv4Address("203.0.113.10"),
        "eth0",
        30.0,
        "block",
    )
    assert c.metadata.ports == (PortRange(1024, 65535, 1024), PortRange(443, 443, 443))
    assert c.metadata.guest_address
    assert set(c.domains) == {"web1", UUID}  # UUID keys are lower-cased
    udp = c.domains[UUID][0]
    assert udp.where == f"{path}: domains.{UUID.upper()}[0]"
    assert (str(udp.address), udp.dev, udp.mac, str(udp.guest_address)) == (
        "203.0.113.11",
        "eth1",
        "52:54:00:6b:3c:02",
        "192.168.122.9",
    )
    assert [str(s) for s in udp.sources] == ["192.0.2.0/24", "198.51.100.0/24"]
    assert udp.ranges == (PortRange(5000, 5010, 6000), PortRange(5005, 5005, 5005, exclude=True))


def test_forwards_by_name_and_by_uuid() -> None:
    c = config(
        {
            "domains": {
                "web1": [{"ranges": [{"start": 8080, "to": 80}]}],
                UUID.upper(): [{"proto": "udp", "ranges": [{"start": 5353, "to": 53}]}],
                "other": [{"ranges": [{"start": 9000}]}],
            }
        }
    )
    # UUID entries first, then the name's
    assert [s.proto for s in c.specs_for("web1", UUID)] == ["udp", "tcp"]
    assert [s.proto for s in c.specs_for("renamed", UUID)] == ["udp"]
    assert c.specs_for("web1", "00000000-0000-0000-0000-000000000000")[0].ranges == (PortRange(8080, 8080, 80),)
    assert c.specs_for("nobody", "00000000-0000-0000-0000-000000000000") == ()


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "domains:\n  web1:\n    - proto: tcp\n   ranges: [\n")
    with pytest.raises(InputError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"libvirt-portfwd: invalid config ({path}): not valid YAML: ")
    assert "line 4" in message and "\n" not in message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_config(str(tmp_path))  # a directory
    assert str(caught.value) == f"libvirt-portfwd: cannot read config ({tmp_path}): not a regular file (a directory)"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (["backend: iptables"], f"invalid config ({P}): expected a mapping at the top, got list"),
        ("backend iptables", f"invalid config ({P}): expected a mapping at the top, got str"),
        (
            {"backends": "iptables"},
            f"invalid config ({P}: backends): unknown key (expected one of backend, address, dev, lease_wait, "
            "on_error, metadata, host_ports, domains), got 'iptables'",
        ),
        ({"on_error": "fail"}, f"invalid config ({P}: on_error): expected allow or block, got 'fail'"),
        ({"on_error": True}, f"invalid config ({P}: on_error): expected allow or block, got True"),
        ({"lease_wait": "5m"}, f"invalid config ({P}: lease_wait): expected seconds, 0-86400, got '5m'"),
        ({"lease_wait": -1}, f"invalid config ({P}: lease_wait): expected seconds, 0-86400, got -1"),
        ({"lease_wait": True}, f"invalid config ({P}: lease_wait): expected seconds, 0-86400, got True"),
        ({"address": "203.0.113"}, f"invalid config ({P}: address): expected an IPv4 address, got '203.0.113'"),
        ({"dev": "eth 0"}, f"invalid config ({P}: dev): expected a network interface name, got 'eth 0'"),
        ({"metadata": "no"}, f"invalid config ({P}: metadata): expected a mapping, got 'no'"),
        (
            {"metadata": {"guest-address": True}},
            f"invalid config ({P}: metadata.guest-address): unknown key (expected one of enabled, ports, "
            "guest_address), got True",
        ),
        ({"metadata": {"enabled": "no"}}, f"invalid config ({P}: metadata.enabled): expected true or false, got 'no'"),
        (
            {"metadata": {"guest_address": 1}},
            f"invalid config ({P}: metadata.guest_address): expected true or false, got 1",
        ),
        (
            {"metadata": {"ports": ["1024-65535", "http"]}},
            f"invalid config ({P}: metadata.ports[1]): expected a port 1-65535, got 'http'",
        ),
        (
            {"metadata": {"ports": ["2000-1000"]}},
            f"invalid config ({P}: metadata.ports[0]): range ends below its start, got '2000-1000'",
        ),
        (
            {"metadata": {"ports": {"from": 1024}}},
            f"invalid config ({P}: metadata.ports): expected a list of ports or ranges such as 1024-65535, "
            "got {'from': 1024}",
        ),
        ({"host_ports": [22]}, f"invalid config ({P}: host_ports): expected a mapping, got [22]"),
        (
            {"host_ports": {"ports": [22]}},
            f"invalid config ({P}: host_ports.ports): unknown key (expected allow), got [22]",
        ),
        (
            {"host_ports": {"allow": {"tcp": 22}}},
            f"invalid config ({P}: host_ports.allow): expected a list of ports or ranges such as 22, tcp/22 or "
            "udp/5000-5010, got {'tcp': 22}",
        ),
        (
            {"host_ports": {"allow": [22, "ssh"]}},
            f"invalid config ({P}: host_ports.allow[1]): expected a port 1-65535, got 'ssh'",
        ),
        (
            {"host_ports": {"allow": ["icmp/22"]}},
            f"invalid config ({P}: host_ports.allow[0]): expected tcp, udp or sctp before '/' (such as 22, tcp/22 "
            "or udp/5000-5010), got 'icmp/22'",
        ),
        (
            {"host_ports": {"allow": ["tcp/"]}},
            f"invalid config ({P}: host_ports.allow[0]): expected a port 1-65535, got ''",
        ),
        (
            {"host_ports": {"allow": ["udp/5010-5000"]}},
            f"invalid config ({P}: host_ports.allow[0]): range ends below its start, got '5010-5000'",
        ),
        (
            {"host_ports": {"allow": ["8000-"]}},
            f"invalid config ({P}: host_ports.allow[0]): range has no end, got '8000-'",
        ),
        (
            {"host_ports": {"allow": [True]}},
            f"invalid config ({P}: host_ports.allow[0]): expected a port or a range such as 22, tcp/22 or "
            "udp/5000-5010, got True",
        ),
        (
            {"host_ports": {"allow": [0]}},
            f"invalid config ({P}: host_ports.allow[0]): expected a port 1-65535, got '0'",
        ),
        (
            {"domains": ["web1"]},
            f"invalid config ({P}: domains): expected a mapping of domain name or UUID to a list of forwards, "
            "got ['web1']",
        ),
        (
            {"domains": {"web1": {"start": 80}}},
            f"invalid config ({P}: domains.web1): expected a list of forwards, got {{'start': 80}}",
        ),
        ({"domains": {1: []}}, f"invalid config ({P}: domains): expected a domain name or UUID as key, got 1"),
        (
            {"domains": {"web1": ["8080:80"]}},
            f"invalid forward ({P}: domains.web1[0]): expected a mapping, got '8080:80'",
        ),
        (
            {"domains": {"web1": [{"proto": "tcp"}]}},
            f"invalid forward ({P}: domains.web1[0].ranges): expected a list of {{start, end, to}}, got None",
        ),
        (
            {"domains": {"web1": [{"ranges": []}]}},
            f"invalid forward ({P}: domains.web1[0].ranges): expected a list of {{start, end, to}}, got []",
        ),
        (
            {"domains": {"web1": [{"ranges": [{"start": 80}], "port": 80}]}},
            f"invalid forward ({P}: domains.web1[0].port): unknown attribute (expected one of proto, address, "
            "dev, source, mac, guest-address), got 80",
        ),
        (
            {"domains": {"web1": [{"ranges": [{"start": 80}]}, {"ranges": [{"start": 80}, {"start": "http"}]}]}},
            f"invalid forward ({P}: domains.web1[1].ranges[1].start): expected a port 1-65535, got 'http'",
        ),
        (
            {"domains": {"web1": [{"ranges": [{"start": 80, "to": 70000}]}]}},
            f"invalid forward ({P}: domains.web1[0].ranges[0].to): expected a port 1-65535, got 70000",
        ),
        (
            {"domains": {"web1": [{"proto": "icmp", "ranges": [{"start": 80}]}]}},
            f"invalid forward ({P}: domains.web1[0].proto): expected tcp, udp or sctp, got 'icmp'",
        ),
        (
            {"domains": {"web1": [{"source": ["198.51.100.0/24", "x"], "ranges": [{"start": 80}]}]}},
            f"invalid forward ({P}: domains.web1[0].source): expected an IPv4 network such as 198.51.100.0/24 "
            "('x' does not appear to be an IPv4 or IPv6 network), got 'x'",
        ),
    ],
)
def test_bad_config(document: object, message: str) -> None:
    assert error_of(document) == f"libvirt-portfwd: {message}"


def test_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "on_error: maybe\n")
    with pytest.raises(InputError) as caught:
        load_config(path)
    assert (
        str(caught.value) == f"libvirt-portfwd: invalid config ({path}: on_error): expected allow or block, got 'maybe'"
    )


def test_metadata_ports_forms() -> None:
    assert config({"metadata": {"ports": 443}}).metadata.ports == (PortRange(443, 443, 443),)
    assert config({"metadata": {"ports": "1024-2048"}}).metadata.ports == (PortRange(1024, 2048, 1024),)
    policy = config({"metadata": {"ports": ["1024-2048", 8443]}}).metadata
    assert policy.allows_port(1024, 2048) and policy.allows_port(8443, 8443)
    assert not policy.allows_port(1000, 1100) and not policy.allows_port(2048, 2049) and not policy.allows_port(80, 80)


def test_host_ports_forms() -> None:
    assert config().host_ports == HostPortsPolicy(allow=())
    assert config({"host_ports": None}).host_ports == HostPortsPolicy(allow=())
    assert config({"host_ports": {}}).host_ports == HostPortsPolicy(allow=())
    assert config({"host_ports": {"allow": 22}}).host_ports.allow == ((None, PortRange(22, 22, 22)),)
    policy = config({"host_ports": {"allow": [53, "8000-8100", "tcp/22", " UDP / 5000-5010 "]}}).host_ports
    assert policy.allow == (
        (None, PortRange(53, 53, 53)),
        (None, PortRange(8000, 8100, 8000)),
        ("tcp", PortRange(22, 22, 22)),
        ("udp", PortRange(5000, 5010, 5000)),
    )
    assert policy.allows("tcp", 53) and policy.allows("udp", 53) and policy.allows("sctp", 8100)
    assert policy.allows("tcp", 22) and not policy.allows("udp", 22) and not policy.allows("tcp", 8101)
    assert policy.allows("udp", 5005) and not policy.allows("tcp", 5005)


def test_the_shipped_config_is_the_defaults_and_its_host_ports_example_parses() -> None:
    """templates/config.yaml: every line a comment; its host_ports example, uncommented, parses."""
    shipped = Path(__file__).resolve().parents[2] / "templates" / "config.yaml"
    lines = shipped.read_text().splitlines()
    assert all(line.startswith("#") for line in lines if line.strip())
    start = next(i for i, line in enumerate(lines) if line.startswith("# host_ports:"))
    example = lines[start].replace("#", "", 1) + "\n" + lines[start + 1].replace("#", "", 1)
    assert yaml.safe_load(example) == {"host_ports": {"allow": []}}
    assert '[tcp/22, "8000-8100"]' in lines[start + 2]
    assert config({"host_ports": {"allow": yaml.safe_load('[tcp/22, "8000-8100"]')}}).host_ports.allows("udp", 8050)


@pytest.mark.parametrize(("backend", "on_error"), [("auto", "allow"), ("iptables", "block"), ("none", "allow")])
def test_backend_and_on_error_values(backend: str, on_error: str) -> None:
    c = config({"backend": backend, "on_error": on_error})
    assert (c.backend, c.on_error) == (backend, on_error)


@pytest.mark.parametrize("backend", ["auto", "iptables", "nftables", "none"])
def test_every_documented_backend_name_parses(tmp_path: Path, backend: str) -> None:
    path = write(tmp_path, f"backend: {backend}\n")
    assert load_config(path).backend == backend


def test_the_config_accepts_exactly_the_registry_names() -> None:
    assert CHOICES == ("auto", "iptables", "nftables", "none")  # README's configuration table says these


@pytest.mark.parametrize("value", ["nft", "NFTABLES", "iptables-legacy", "", 1, ["nftables"]])
def test_unknown_backend_is_one_line_naming_file_key_value_and_the_known_names(tmp_path: Path, value: object) -> None:
    path = write(tmp_path, f"backend: {json.dumps(value)}\n")
    with pytest.raises(InputError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"libvirt-portfwd: invalid config ({path}: backend): expected one of auto, iptables, nftables, none, "
        f"got {value!r}"
    )


# --- the parsed-config cache ------------------------------------------------------------


def test_cache_hit_skips_the_yaml_parser(tmp_path: Path, mocker: MockerFixture) -> None:
    path = write(tmp_path, "on_error: block\ndomains:\n  web1:\n    - ranges: [{start: 8080, to: 80}]\n")
    cache = str(tmp_path / "run" / "config.cache")
    parse = mocker.spy(config_module, "_parse_file")
    first = load_config(path, cache)
    assert os.path.isfile(cache)
    entry = configcache.read_cache(cache, path)
    assert entry is not None and entry["keys"] == ["web1"] and entry["on_error"] == "block"
    second = load_config(path, cache)
    assert parse.call_count == 1
    assert first == second


def test_cache_invalidated_when_the_file_changes(tmp_path: Path, mocker: MockerFixture) -> None:
    path = write(tmp_path, "on_error: allow\n")
    cache = str(tmp_path / "config.cache")
    parse = mocker.spy(config_module, "_parse_file")
    assert load_config(path, cache).on_error == "allow"
    Path(path).write_text("on_error: block\n")  # same size, rewritten in place
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert load_config(path, cache).on_error == "block"
    assert parse.call_count == 2
    replacement = tmp_path / "config.yaml.new"
    replacement.write_text("lease_wait: 5\n")
    os.replace(replacement, path)  # how editors save: a new inode
    assert load_config(path, cache).lease_wait == 5.0
    assert parse.call_count == 3


def test_cache_follows_creation_and_removal(tmp_path: Path) -> None:
    path = str(tmp_path / "config.yaml")
    cache = str(tmp_path / "config.cache")
    assert load_config(path, cache) == Config(path=path)
    Path(path).write_text("backend: none\n")
    assert load_config(path, cache).backend == "none"
    os.unlink(path)
    assert load_config(path, cache).backend == "auto"


def test_cached_error_is_raised_again_and_cleared_by_a_fix(tmp_path: Path, mocker: MockerFixture) -> None:
    path = write(tmp_path, "backend: nft\n")
    cache = str(tmp_path / "config.cache")
    parse = mocker.spy(config_module, "_parse_file")
    for _ in range(2):
        with pytest.raises(InputError) as caught:
            load_config(path, cache)
        assert str(caught.value) == (
            f"libvirt-portfwd: invalid config ({path}: backend): expected one of auto, iptables, nftables, none, "
            "got 'nft'"
        )
    assert parse.call_count == 1
    Path(path).write_text("backend: none\n\n")
    assert load_config(path, cache).backend == "none"


def test_cache_written_by_an_older_validator_is_not_used(tmp_path: Path) -> None:
    """Before backend: nftables was accepted, its refusal was cached; after an upgrade that
    verdict must not outlive the code that made it (the config file itself is unchanged)."""
    path = write(tmp_path, "backend: nftables\n")
    cache = str(tmp_path / "config.cache")
    refusal = ("invalid config", f"{path}: backend", "expected one of auto, iptables, none, got 'nftables'")
    old = {"path": path, "signature": configcache.signature(path), "document": {}, "keys": [], "error": refusal}
    Path(cache).write_bytes(marshal.dumps({**old, "version": 1}))
    assert load_config(path, cache).backend == "nftables"
    entry = configcache.read_cache(cache, path)
    assert entry is not None and "error" not in entry and entry["version"] == configcache.VERSION


def test_cache_for_another_file_is_not_used(tmp_path: Path) -> None:
    first = write(tmp_path, "backend: none\n")
    second = tmp_path / "other.yaml"
    second.write_text("backend: iptables\n")
    cache = str(tmp_path / "config.cache")
    assert load_config(first, cache).backend == "none"
    assert load_config(str(second), cache).backend == "iptables"


@pytest.mark.parametrize("garbage", [b"", b"not marshal", b"\xff" * 64])
def test_corrupt_cache_is_ignored(tmp_path: Path, garbage: bytes) -> None:
    path = write(tmp_path, "backend: none\n")
    cache = tmp_path / "config.cache"
    cache.write_bytes(garbage)
    assert configcache.read_cache(str(cache), path) is None
    assert load_config(path, str(cache)).backend == "none"


def test_unwritable_cache_is_not_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "backend: none\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert load_config(path, str(blocker / "config.cache")).backend == "none"
