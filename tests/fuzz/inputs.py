"""Structure-aware hostile inputs, by family, from one seeded generator.

An input is a ``Case``: the domain XML on stdin and the files of a host (config, network status,
leases), each a ``File``: bytes, or something else in place of a file (a directory, a FIFO, a
link to a device or to the secret). The ``cli`` family adds a command line. Every family starts
from the golden cases (tests/cases) and breaks one part of them in one of many ways.

Two canaries: ``INJECT`` rides in every hostile value that must never reach a rule (a ruleset or
``plan``'s rule lines that hold it are an injection); ``Context.secret`` is the content of a file
that only an entity, a DTD or an XInclude would read (it must appear in no output at all).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

INJECT = "pf!nject"  # "!" is in no valid value that reaches a rule: where this is, a check failed
CASES = Path(__file__).resolve().parents[1] / "cases"
FAMILIES = ("xml", "metadata", "config", "leases", "network", "cli")
NS = "urn:libvirt-portfwd:1"
UUID = "d0a9822c-a65d-5f01-aecc-d344520d127f"
MAC = "52:54:00:6b:3c:01"


@dataclass(frozen=True)
class File:
    """What lies at a path: ``data`` (bytes), or ``kind`` dir, fifo, devlink, secretlink, missing."""

    kind: str = "bytes"
    data: bytes = b""


@dataclass
class Case:
    family: str
    index: int
    what: str  # the mutation, for the report
    domain: bytes
    files: dict[str, File] = field(default_factory=dict)  # path under the root -> File
    argv: list[str] | None = None  # cli family: the command line after --root ROOT

    def brief(self) -> str:
        return f"{self.family}#{self.index} ({self.what})"


@dataclass(frozen=True)
class Context:
    secret: str  # the content of the secret file
    secret_path: str


CONFIG = "etc/libvirt-portfwd/config.yaml"
NETWORK = "run/libvirt/network/default.xml"
LEASES = "var/lib/libvirt/dnsmasq/virbr0.status"


@dataclass(frozen=True)
class Seed:
    name: str
    domain: bytes
    network: bytes
    leases: bytes
    config: bytes | None
    renders: bool  # no error.txt: the golden case renders a ruleset


def load_seeds() -> list[Seed]:
    seeds = []
    for case in sorted(p for p in CASES.iterdir() if (p / "domain.xml").is_file()):
        config = case / "config.yaml"
        seeds.append(
            Seed(
                case.name,
                (case / "domain.xml").read_bytes(),
                (case / "network.xml").read_bytes(),
                (case / "leases.status").read_bytes(),
                config.read_bytes() if config.is_file() else None,
                not (case / "error.txt").exists(),
            )
        )
    assert seeds, f"no golden cases in {CASES}"
    return seeds


# --- hostile values ---------------------------------------------------------------------------

SEPARATORS = ["\n", "\r\n", " ", "\t", ";", "{", "}", "#", '"', "'", "\\", "$(", "`", "\x00", ",", "|", "&"]
HOSTILE_STRINGS = [
    f"80\n-A FORWARD -j ACCEPT #{INJECT}",
    f"eth0 -j ACCEPT {INJECT}",
    f'virbr0" ; flush ruleset ; "{INJECT}',
    f"{INJECT}}} ; add rule ip filter forward accept ; {{",
    f"-j {INJECT}",
    f"--goto {INJECT}",
    f"x; {INJECT}",
    f"'{INJECT}'",
    f'"{INJECT}"',
    f"#{INJECT}",
    f"{INJECT}\n",
    f"\n{INJECT}",
    f"$({INJECT})",
    f"`{INJECT}`",
    f"{INJECT}\x00",
    f"{INJECT} " * 50,
]
BAD_PORTS = [
    "0", "65536", "-1", "017", "00080", "0x50", "1_000", "1:30", "8²", "٨٠", "\uff18\uff10", "80.0", "1e3", "+80",
    " 80 ",
    "", " ", "9" * 5000, "9" * 20, "80-90", "80,81", "nan", "inf", f"80 {INJECT}", f"80\n{INJECT}", "99999",
]  # fmt: skip
GOOD_PORTS = ["1", "22", "80", "443", "1024", "8080", "20443", "65535", "2080"]
ADDRESSES = [
    "203.0.113.10", "203.0.113.11", "192.168.122.1", "192.168.122.0", "192.168.122.255", "192.168.122.50",
    "0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "::1", "2001:db8::1", "10.0.0.5", "1.2.3", "1.2.3.4.5",
    "256.1.1.1", "01.2.3.4", "1.2.3.4/24", "².1.1.1", " 203.0.113.10", "3232235777",
]  # fmt: skip
SOURCES = [
    "198.51.100.0/24", "0.0.0.0/0", "198.51.100.7/32", "198.51.100.7", "198.51.100.1/24", "10.0.0.0/8,192.0.2.0/24",
    "::/0", "198.51.100.0/33", ",", "198.51.100.0/24,", "1.2.3.4/0", ",".join(f"10.{i}.0.0/16" for i in range(40)),
]  # fmt: skip
DEVS = ["enp2s0", "eth+", "eth0", "a" * 15, "a" * 16, "-j", "--goto", "-", ".", "..", "br0:1", "eth0.100", "+", "é"]
MACS = [MAC, MAC.upper(), "52:54:00:aa:bb:cc", "52:54:00:6b:3c", "52-54-00-6b-3c-01", "zz:54:00:6b:3c:01", ""]
PROTOS = ["tcp", "udp", "sctp", "TCP", "icmp", "", "tcp udp", "6", "all"]
# A forward's attributes: values that must render, and values that must be refused.
GOOD = {
    "proto": ["tcp", "udp", "sctp", "TCP"],
    "address": ["203.0.113.10", "203.0.113.11"],
    "dev": ["enp2s0", "eth+", "eth0.100", "a" * 15],
    "source": ["198.51.100.0/24", "0.0.0.0/0", "198.51.100.7/32", "198.51.100.7", "10.0.0.0/8,192.0.2.0/24"],
    "mac": [MAC],
    "guest-address": ["192.168.122.50", "192.168.122.77"],
}
BAD = {
    "proto": ["icmp", "", "tcp udp", "6", "all"],
    "address": ["0.0.0.0", "127.0.0.1", "224.0.0.1", "::1", "1.2.3", "256.1.1.1", "01.2.3.4", "1.2.3.4/24", "².1.1.1"],
    "dev": ["a" * 16, "-j", "--goto", "-", ".", "..", "+", "é", "eth 0"],
    "source": ["::/0", "198.51.100.0/33", ",", "198.51.100.1/24", ",".join(f"10.{i}.0.0/16" for i in range(40))],
    "mac": ["52:54:00:6b:3c", "52-54-00-6b-3c-01", "zz:54:00:6b:3c:01", "52:54:00:aa:bb:cc"],
    "guest-address": ["192.168.122.1", "192.168.122.0", "192.168.122.255", "10.0.0.5", "0.0.0.0"],
}
BOOLS = ["yes", "no", "true", "false", "YES", "1", "0", "maybe", ""]


class Generator:
    """``case(family, index)``: one input; the same seed and index give the same input."""

    def __init__(self, seed: int, ctx: Context) -> None:
        self.seed = seed
        self.ctx = ctx
        self.seeds = load_seeds()
        self.rendering = [s for s in self.seeds if s.renders]
        self.rng = random.Random(seed)

    def case(self, family: str, index: int) -> Case:
        self.rng = random.Random(f"{self.seed}/{family}/{index}")
        # domain XML from every case, error cases included; the other families break one thing
        # of a case that renders, so that what they break is what stops it
        base = self.rng.choice(self.seeds if family == "xml" else self.rendering)
        case = Case(family, index, "", base.domain, self._host(base))
        getattr(self, f"_{family}")(case, base)
        return case

    # -- helpers -------------------------------------------------------------------------------
    def _host(self, base: Seed) -> dict[str, File]:
        files = {NETWORK: File(data=base.network), LEASES: File(data=base.leases)}
        if base.config is not None:
            files[CONFIG] = File(data=base.config)
        return files

    def pick(self, *pools: list[str]) -> str:
        return self.rng.choice(self.rng.choice(pools))

    def hostile(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            return self.rng.choice(HOSTILE_STRINGS)
        good = self.pick(GOOD_PORTS, ADDRESSES, DEVS, MACS, PROTOS)
        return (
            f"{good}{self.rng.choice(SEPARATORS)}{INJECT}"
            if r < 0.9
            else f"{INJECT}{self.rng.choice(SEPARATORS)}{good}"
        )

    def special(self) -> File:
        return File(kind=self.rng.choice(["dir", "fifo", "devlink", "secretlink", "missing"]))

    def entity_prologue(self, root: str) -> tuple[bytes, bytes]:
        """A DTD and the reference that uses it: a bomb, an external entity, a parameter entity."""
        secret = f"file://{self.ctx.secret_path}"
        kind = self.rng.randrange(5)
        if kind == 0:
            levels = "".join(
                f'<!ENTITY e{i} "{("&e" + str(i - 1) + ";") * 10 if i else "lol"}">'
                for i in range(self.rng.randint(2, 9))
            )
            last = levels.count("<!ENTITY") - 1
            return f"<!DOCTYPE {root} [{levels}]>".encode(), f"&e{last};".encode()
        if kind == 1:
            return f'<!DOCTYPE {root} [<!ENTITY s SYSTEM "{secret}">]>'.encode(), b"&s;"
        if kind == 2:
            return f'<!DOCTYPE {root} SYSTEM "{secret}">'.encode(), b""
        if kind == 3:
            return f'<!DOCTYPE {root} [<!ENTITY % p SYSTEM "{secret}"> %p;]>'.encode(), b""
        return f'<!DOCTYPE {root} [<!ENTITY n SYSTEM "http://192.0.2.1/{INJECT}">]>'.encode(), b"&n;"

    def mutate_bytes(self, data: bytes) -> tuple[bytes, str]:
        """A generic byte-level mutation of a structured text (XML, YAML, JSON)."""
        rng = self.rng
        kind = rng.randrange(8)
        if kind == 0 or not data:
            cut = rng.randrange(len(data) + 1)
            return data[:cut], f"truncated at {cut}"
        if kind == 1:
            buf = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            return bytes(buf), "bytes flipped"
        if kind == 2:
            at = rng.randrange(len(data))
            junk = rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xe9", b"\x00", b"\xf0\x9f", b"\xed\xa0\x80", b"\r"])
            return data[:at] + junk + data[at:], "invalid UTF-8"
        if kind == 3:
            return b"\xef\xbb\xbf" + data, "BOM"
        if kind == 4:
            return data.decode("utf-8", "replace").encode("utf-16"), "UTF-16"
        if kind == 5:
            at, end = sorted(rng.randrange(len(data)) for _ in range(2))
            return data[:at] + data[at:end] * rng.randint(2, 50) + data[end:], "a span repeated"
        if kind == 6:
            at = rng.randrange(len(data))
            return data[:at] + self.hostile().encode() + data[at:], "hostile text inserted"
        at, end = sorted(rng.randrange(len(data)) for _ in range(2))
        return data[:at] + data[end:], "a span removed"

    # -- domain XML ----------------------------------------------------------------------------
    def _xml(self, case: Case, base: Seed) -> None:
        rng, xml = self.rng, base.domain
        kind = rng.randrange(12)
        if kind <= 2:
            case.domain, case.what = self.mutate_bytes(xml)
        elif kind == 3:
            prologue, ref = self.entity_prologue("domain")
            target = rng.choice([b"<name>", b'start="', b"<uuid>", b"<metadata>"])
            if target in xml and ref:
                xml = xml.replace(target, target + ref, 1)
            case.domain, case.what = prologue + xml, "entities / DTD"
        elif kind == 4:
            depth = rng.choice([10, 255, 256, 257, 1000, 100_000])
            body = b"<portfwd:x>" * depth + b"</portfwd:x>" * depth
            case.domain = self._with_metadata(
                xml, f'<portfwd:portfwd xmlns:portfwd="{NS}">'.encode() + body + b"</portfwd:portfwd>"
            )
            case.what = f"nested {depth} deep"
        elif kind == 5:
            case.domain = xml.replace(
                b"<metadata>",
                b'<metadata><xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file://'
                + self.ctx.secret_path.encode()
                + b'" parse="text"/>',
                1,
            )
            case.what = "XInclude"
        elif kind == 6:
            from libvirt_portfwd import limits

            size = limits.DOMAIN_XML.value + rng.choice([-1, 0, 1, 4096])
            end = xml.rindex(b"</domain>")
            case.domain = xml[:end] + b"<!-- " + b"x" * max(0, size - len(xml) - 9) + b" -->" + xml[end:]
            case.what = f"{len(case.domain)} bytes"
        elif kind == 7:
            text = xml.decode()
            name = rng.choice(["w\xe9b1", "web1\u2028", "\ud7ff", "web1"])
            case.domain = text.replace("<name>web1</name>", f"<name>{name}</name>").encode(
                rng.choice(["latin-1", "cp1252", "utf-8"]), "replace"
            )
            case.what = "not UTF-8"
        elif kind == 8:
            nic = xml[xml.find(b"<interface") : xml.find(b"</interface>") + len(b"</interface>")]
            case.domain = xml.replace(nic, nic * rng.choice([2, 100, 20_000]), 1) if nic else xml
            case.what = "many NICs"
        elif kind == 9:
            element = rng.choice([b"name", b"uuid", b"devices", b"metadata", b"mac"])
            start = xml.find(b"<" + element)
            end = xml.find(b"</" + element + b">", start)
            if start >= 0 and end >= 0 and rng.random() < 0.5:
                case.domain = xml[:start] + xml[end + len(element) + 3 :]
            elif start >= 0 and end >= 0:
                piece = xml[start : end + len(element) + 3]
                case.domain = xml[:start] + piece * 2 + xml[start:]
            case.what = f"<{element.decode()}> removed or doubled"
        elif kind == 10:
            value = self.hostile()
            attr = rng.choice(["name", "uuid", "mac address", "source network", "source bridge", "interface type"])
            case.domain = self._set_in_xml(xml, attr, value)
            case.what = f"hostile {attr}"
        else:
            case.domain = rng.choice(
                [
                    b"",
                    b" ",
                    b"<domain/>",
                    b"<network/>",
                    b"<domain>",
                    b"\x00" * 10,
                    b"<?xml version='1.0' encoding='ebcdic'?><domain/>",
                    b"<domain><![CDATA[x]]><name>a</name></domain>",
                ]
            )
            case.what = "degenerate"

    def _set_in_xml(self, xml: bytes, attr: str, value: str) -> bytes:
        from xml.sax.saxutils import escape, quoteattr

        text = xml.decode("utf-8", "replace")
        if attr == "name":
            return text.replace("<name>web1</name>", f"<name>{escape(value)}</name>", 1).encode()
        if attr == "uuid":
            start, end = text.find("<uuid>"), text.find("</uuid>")
            return (text[: start + 6] + escape(value) + text[end:]).encode() if start >= 0 else xml
        element, name = attr.split()
        marker = f"<{element} "
        at = text.find(marker)
        if at < 0:
            return xml
        close = text.find(">", at)
        tag = text[at:close]
        import re

        tag = (
            re.sub(rf"\s{name}=(\"[^\"]*\"|'[^']*')", "", tag)
            + f" {name}={quoteattr(value, {chr(10): '&#10;', chr(13): '&#13;', chr(9): '&#9;'})}"
        )
        return (text[:at] + tag + text[close:]).encode()

    def _with_metadata(self, xml: bytes, metadata: bytes) -> bytes:
        start, end = xml.find(b"<metadata>"), xml.find(b"</metadata>")
        if start >= 0 and end >= 0:
            return xml[: start + len(b"<metadata>")] + metadata + xml[end:]
        at = xml.find(b"</uuid>") + len(b"</uuid>")
        return xml[:at] + b"<metadata>" + metadata + b"</metadata>" + xml[at:]

    # -- metadata values -----------------------------------------------------------------------
    def _metadata(self, case: Case, base: Seed) -> None:
        """Forwards written by a hostile VM owner: clean ones (they must render), ones with one bad
        value (refused, naming it), and chaos; sometimes as many as the limits allow, and one more."""
        from xml.sax.saxutils import quoteattr

        rng = self.rng
        entities = {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
        mode = rng.choices(["clean", "one", "chaos"], [35, 50, 15])[0]
        count = rng.choice([1, 1, 1, 1, 1, 2, 2, 3, 5]) if rng.random() < 0.97 else rng.choice([63, 64, 65])
        forwards: list[dict[str, str]] = []
        ranges: list[list[dict[str, str]]] = []
        bad = 0.25 if mode == "chaos" else 0.0
        for n in range(count):
            attrs = {"proto": rng.choice(GOOD["proto"])} if rng.random() < 0.8 else {}
            for key, pool in GOOD.items():
                if key != "proto" and rng.random() < 0.2:
                    attrs[key] = rng.choice(pool)
            for key in list(attrs):
                if rng.random() < bad:
                    attrs[key] = rng.choice(BAD[key]) if rng.random() < 0.5 else self.hostile()
            forwards.append(attrs)
            width = rng.choice([1, 1, 1, 2, 3]) if count < 10 and rng.random() < 0.98 else rng.choice([1, 70, 256, 257])
            port = 1000 + 1000 * n + rng.randrange(500)
            mine = []
            for r in range(width):
                start = port + 3 * r if width > 1 else rng.choice([port, *map(int, GOOD_PORTS)])
                values = {"start": str(start)}
                if rng.random() < 0.3:
                    values["end"] = str(min(65535, start + rng.choice([0, 1, 2])))
                if rng.random() < 0.3:
                    values["to"] = rng.choice(GOOD_PORTS)
                mine.append(values)
            if width < 5 and rng.random() < 0.15:
                mine.append({"start": mine[0]["start"], "exclude": "yes"})
                mine[0]["end"] = str(min(65535, int(mine[0]["start"]) + 5))
            for values in mine:
                for key in list(values):
                    if rng.random() < bad:
                        values[key] = rng.choice(BAD_PORTS) if rng.random() < 0.6 else self.hostile()
            ranges.append(mine)
        if rng.random() < 0.02:  # the widest forwards: every port, through sources (limits.RULES)
            start = rng.choice([1, 1, 2, 1000, 30000])
            forwards[0] = {"proto": "tcp", "source": rng.choice(["0.0.0.0/0", "0.0.0.0/1,128.0.0.0/1", ""])}
            ranges[0] = [{"start": str(start), "end": "65535"}]
            if rng.random() < 0.3 and start > 1:
                ranges[0][0]["to"] = "1"
        if mode == "one":  # exactly one hostile value, anywhere
            n = rng.randrange(count)
            if rng.random() < 0.5:
                key = rng.choice([*GOOD, "Proto", INJECT])
                forwards[n][key] = rng.choice(BAD.get(key, [])) if key in BAD and rng.random() < 0.4 else self.hostile()
            else:
                values = rng.choice(ranges[n])
                key = rng.choice(["start", "end", "to", "exclude", "port"])
                values[key] = rng.choice(BAD_PORTS) if rng.random() < 0.6 else self.hostile()
        prefix = rng.choice(["portfwd:", "portfwd:", ""])

        def element(name: str, values: dict[str, str], inner: str = "") -> str:
            text = "".join(f" {k}={quoteattr(v, entities)}" for k, v in values.items())
            return f"<{prefix}{name}{text}>{inner}</{prefix}{name}>" if inner else f"<{prefix}{name}{text}/>"

        body = "".join(
            element("portForward", attrs, "".join(element("range", r) for r in mine))
            for attrs, mine in zip(forwards, ranges, strict=True)
        )
        namespace = NS if rng.random() < 0.95 else rng.choice(["urn:libvirt-portfwd:2", "urn:other"])
        if prefix:
            metadata = f'<portfwd:portfwd xmlns:portfwd="{namespace}">{body}</portfwd:portfwd>'
        else:
            metadata = f'<portfwd xmlns="{namespace}">{body}</portfwd>'
        case.domain = self._with_metadata(base.domain, metadata.encode("utf-8", "surrogatepass"))
        if "guest-address" in metadata and rng.random() < 0.8:
            case.files[CONFIG] = File(data=b"metadata: {guest_address: true}\n")
        elif CONFIG in case.files and rng.random() < 0.7:
            del case.files[CONFIG]  # the seed's config forwards may conflict with ours
        case.what = f"{mode}, {count} forward(s)"

    # -- YAML config ---------------------------------------------------------------------------
    def _config(self, case: Case, base: Seed) -> None:
        rng = self.rng
        kind = rng.randrange(10)
        data: bytes
        if kind == 0:
            levels = rng.randint(3, 9)
            lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
            lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
            key = rng.choice(["domains", "backend", "address", "metadata", "x"])
            lines.append(f"{key}: *a{levels - 1}")
            data, case.what = "\n".join(lines).encode(), f"alias bomb, {levels} levels"
        elif kind == 1:
            tag = rng.choice(
                [
                    "!!python/object/apply:os.system ['echo " + INJECT + "']",
                    "!!python/object:object {}",
                    "!!python/name:os.system",
                    "!!python/tuple [1, 2]",
                    "!!bool maybe",
                    "!!bool yes",
                    "!!float x",
                    "!!float 80",
                    "!!int 0x50",
                    "!!int 017",
                    "!!binary '!!!'",
                    "!!binary aGVsbG8=",
                    "!!timestamp x",
                    "!!timestamp 2001-12-14",
                    "!!set {a, b}",
                    "!!omap [a: 1]",
                    "!!str 80",
                    "!!null ''",
                    "!custom x",
                ]
            )
            where = rng.choice(
                [
                    "backend: {v}",
                    "lease_wait: {v}",
                    "address: {v}",
                    "on_error: {v}",
                    "metadata: {{enabled: {v}}}",
                    "metadata: {{ports: [{v}]}}",
                    "domains: {{web1: [{{proto: {v}, ranges: [{{start: 80}}]}}]}}",
                    "domains: {{web1: [{{ranges: [{{start: {v}}}]}}]}}",
                    "domains: {{{v}: []}}",
                ]
            )
            data, case.what = where.format(v=tag).encode(), f"tag {tag.split()[0]}"
        elif kind == 2:
            data, case.what = self._wrong_types(), "wrong types"
        elif kind == 3:
            key = rng.choice(["on_error: allow", "backend: none", "domains: {}", "lease_wait: 1"])
            other = rng.choice(["on_error: block", "backend: auto", "domains: {web1: []}", "lease_wait: 2"])
            dup_in = rng.random() < 0.5
            if dup_in:
                data = b"domains:\n  web1:\n    - {ranges: [{start: 80}]}\n  web1:\n    - {ranges: [{start: 81}]}\n"
            else:
                data = f"{key}\n{other.split(':')[0]}: {key.split(': ')[1]}\n".encode()
            data, case.what = data, "duplicate keys"
        elif kind == 4:
            depth = rng.choice([5, 31, 32, 33, 200, 5000])
            data, case.what = (b"domains: " + b"[" * depth + b"]" * depth + b"\n"), f"nested {depth} deep"
        elif kind == 5:
            data, case.what = self.mutate_bytes(base.config or b"domains:\n  web1:\n    - ranges: [{start: 80}]\n")
        elif kind == 6:
            case.files[CONFIG] = self.special()
            case.what = f"config is {case.files[CONFIG].kind}"
            return
        elif kind == 7:
            from libvirt_portfwd import limits

            size = limits.CONFIG_FILE.value + rng.choice([-1, 0, 1])
            head = b"on_error: block\n"
            data, case.what = head + b"#" * (size - len(head) - 1) + b"\n", f"{size} bytes"
        elif kind == 8:
            value = rng.choice(
                [
                    "017",
                    "0o17",
                    "0x50",
                    "1_000",
                    "1:30",
                    "0b101",
                    "80.5",
                    ".inf",
                    "-.inf",
                    ".nan",
                    "9" * 5000,
                    "-0",
                    "+80",
                    "1e3",
                    "~",
                    "''",
                ]
            )
            where = rng.choice(
                [
                    "lease_wait: {v}",
                    "metadata: {{ports: [{v}]}}",
                    "domains: {{web1: [{{ranges: [{{start: {v}}}]}}]}}",
                    "domains: {{web1: [{{ranges: [{{start: 80, to: {v}}}]}}]}}",
                ]
            )
            data, case.what = where.format(v=value).encode(), f"number {value[:10]}"
        else:
            choice = rng.randrange(5)
            data = [
                b"--- {}\n--- {}\n",
                b"a: &x 1\nb: *y\n",
                b"base: &b {proto: tcp, ranges: [{start: 2222, to: 22}]}\ndomains:\n  web1: [{<<: *b, proto: udp}]\n",
                b"\tdomains: {}\n",
                b"domains: &d {web1: *d}\n",
            ][choice]
            case.what = ["two documents", "undefined alias", "merge key", "tab", "recursive alias"][choice]
        case.files[CONFIG] = File(data=data)

    def _wrong_types(self) -> bytes:
        rng = self.rng
        values = [
            "~", "true", "false", "0", "-1", "86401", "1.5", "[]", "{}", "[a, b]", "{a: 1}", "''", f"'{INJECT}'",
            '"a\\nb"', "auto", "iptables", "nftables", "none", "nft", "block", "allow", "203.0.113.10", "eth0", "-j",
            "[1024-65535, 80]", "['80-']", "['90-80']", "[0]", "{web1: [{ranges: [{start: 80}]}]}", "{web1: {}}",
            "{web1: [1]}", "{web1: [{ranges: {}}]}", "{web1: [{ranges: [1]}]}", f"{{{INJECT}: []}}",
        ]  # fmt: skip
        keys = ["backend", "address", "dev", "lease_wait", "on_error", "metadata", "domains", INJECT]
        lines = []
        for key in rng.sample(keys, rng.randint(1, 4)):
            if key == "metadata" and rng.random() < 0.6:
                inner = rng.choice(["enabled", "ports", "guest_address", "other"])
                lines.append(f"metadata: {{{inner}: {rng.choice(values)}}}")
            elif key == "domains" and rng.random() < 0.6:
                forward_key = rng.choice(["proto", "address", "dev", "source", "mac", "guest-address", "ranges", "x"])
                range_key = rng.choice(["start", "end", "to", "exclude", "y"])
                ranges = f"[{{start: 80, {range_key}: {rng.choice(values)}}}]"
                lines.append(f"domains: {{web1: [{{{forward_key}: {rng.choice(values)}, ranges: {ranges}}}]}}")
            else:
                lines.append(f"{key}: {rng.choice(values)}")
        return ("\n".join(lines) + "\n").encode()

    # -- lease files ---------------------------------------------------------------------------
    def _leases(self, case: Case, base: Seed) -> None:
        import json

        rng = self.rng
        kind = rng.randrange(8)
        entry: dict[str, object] = {"ip-address": "192.168.122.50", "mac-address": MAC, "expiry-time": 4102444800}
        if kind == 0:
            case.files[LEASES], case.what = self.special(), "leases file is special"
            return
        if kind <= 2:
            key = rng.choice(["ip-address", "mac-address", "expiry-time", "hostname", "client-id"])
            entry[key] = rng.choice(
                [
                    None, True, 1.5, -1, 2**70, "9" * 30, [], {}, self.hostile(),
                    "192.168.122.1", "192.168.122.255", "2001:db8::5", "52:54:00:6b:3c:01\n", MAC.upper(), "",
                ]
            )  # fmt: skip
            data, case.what = (
                json.dumps(rng.choice([[entry], [entry, entry], [entry] * 300, entry, [[entry]]])).encode(),
                f"lease {key}",
            )
        elif kind == 3:
            depth = rng.choice([10, 1000, 100_000])
            data, case.what = b"[" * depth + b"]" * depth, f"nested {depth} deep"
        elif kind == 4:
            data, case.what = self.mutate_bytes(base.leases)
        elif kind == 5:
            from libvirt_portfwd import limits

            size = limits.LEASE_FILE.value + rng.choice([-1, 0, 1])
            text = json.dumps([entry])
            data, case.what = (text[:-1] + " " * (size - len(text)) + "]").encode(), f"{size} bytes"
        elif kind == 6:
            data = rng.choice(
                [
                    b"",
                    b"   ",
                    b"null",
                    b"{}",
                    b"[]",
                    b'"x"',
                    b"1" * 5000,
                    b"[1e999]",
                    b"[NaN]",
                    b'[{"expiry-time": ' + b"9" * 5000 + b"}]",
                ]
            )
            case.what = "degenerate JSON"
        else:
            entries = [
                {
                    "ip-address": f"192.168.122.{i % 256}",
                    "mac-address": f"52:54:00:00:{i // 256 % 256:02x}:{i % 256:02x}",
                    "expiry-time": 0,
                }
                for i in range(rng.choice([10, 20_000]))
            ]
            entries.append(entry)
            data, case.what = json.dumps(entries).encode(), f"{len(entries)} leases"
        case.files[LEASES] = File(data=data)

    # -- network status ------------------------------------------------------------------------
    def _network(self, case: Case, base: Seed) -> None:
        from xml.sax.saxutils import quoteattr

        rng = self.rng
        text = base.network.decode()
        kind = rng.randrange(9)
        entities = {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
        if kind == 0:
            case.files[NETWORK], case.what = self.special(), "network status is special"
            return
        if kind == 1:
            case.files.pop(NETWORK)
            case.files["run/libvirt/network"] = File(data=b"not a directory")
            case.what = "network dir is a file"
            return
        if kind <= 3:
            value = self.hostile() if rng.random() < 0.6 else rng.choice([*DEVS, "virbr0", "br+", "a" * 16, ""])
            target = rng.choice(
                [
                    "bridge name",
                    "ip address",
                    "ip netmask",
                    "ip prefix",
                    "forward mode",
                    "firewall backend",
                    "host mac",
                    "host ip",
                    "mac address",
                ]
            )
            element, attr = target.split()
            if element == "host":
                text = text.replace("</dhcp>", f"<host mac='{MAC}' ip='192.168.122.60'/></dhcp>")
            if element == "firewall" and "<firewall" not in text:
                text = text.replace("<class_id", "<firewall backend='nftables'/><class_id")
            import re

            pattern = rf"<{element}\b([^>]*?)\s{attr}=('[^']*'|\"[^\"]*\")"
            new, count = re.subn(
                pattern, lambda m: f"<{element}{m.group(1)} {attr}={quoteattr(value, entities)}", text, count=1
            )
            if not count:
                new = text.replace(f"<{element} ", f"<{element} {attr}={quoteattr(value, entities)} ", 1)
            text, case.what = new, f"hostile {target}"
        elif kind == 4:
            name = self.hostile() if rng.random() < 0.7 else rng.choice(["", " ", "n" * 300])
            from xml.sax.saxutils import escape

            text = text.replace("<name>default</name>", f"<name>{escape(name, entities)}</name>")
            case.what = "hostile network name"
        elif kind == 5:
            data, case.what = self.mutate_bytes(base.network)
            case.files[NETWORK] = File(data=data)
            return
        elif kind == 6:
            prologue, ref = self.entity_prologue("networkstatus")
            text = prologue.decode() + text.replace("<name>default</name>", f"<name>default{ref.decode()}</name>")
            case.what = "entities / DTD"
        elif kind == 7:
            prefix = rng.choice(
                ["0", "8", "24", "30", "31", "32", "33", "-1", "²4", "999999999999", "255.255.255.0", ""]
            )
            text = text.replace(" netmask='255.255.255.0'", f" prefix={quoteattr(prefix)}").replace(
                " address='192.168.122.1'", f" address={quoteattr(rng.choice(ADDRESSES))}"
            )
            case.what = f"ip prefix {prefix!r}"
        else:
            text = text.replace(
                "</dhcp>",
                "".join(
                    f"<host mac='52:54:00:00:{i // 256 % 256:02x}:{i % 256:02x}' ip='192.168.122.{i % 250 + 2}'/>"
                    for i in range(rng.choice([5, 5000]))
                )
                + "</dhcp>",
            )
            case.what = "many reservations"
        case.files[NETWORK] = File(data=text.encode("utf-8", "surrogatepass"))

    # -- command lines -------------------------------------------------------------------------
    def _cli(self, case: Case, base: Seed) -> None:
        rng = self.rng
        others = ["hook", "apply", "remove", "status", "sync", "serve", "watch", "", "plan2", INJECT, "-h", "--help"]
        command = "plan" if rng.random() < 0.6 else rng.choice(others)
        argv: list[str] = []
        if rng.random() < 0.2:
            argv += [
                "--config",
                rng.choice(["config.yaml", "missing.yaml", "dir", "fifo", "devlink", "", "-", f"x\n{INJECT}"]),
            ]
        if command:
            argv.append(command)
        if command == "plan":
            if rng.random() < 0.4:
                backends = ["auto", "iptables", "nftables", "none"] * 3 + ["nft", "", INJECT, "NONE"]
                argv += ["--backend", rng.choice(backends)]
            files = ["dir", "fifo", "devlink", "missing.xml", "huge.xml", f"{INJECT}\n.xml", ""]
            target = rng.choice(["-", "domain.xml"]) if rng.random() < 0.7 else rng.choice(files)
            if rng.random() < 0.95:
                argv.append(target)
        elif command in ("remove", "hook", "apply"):
            argv += [rng.choice(["web1", f"web1\n{INJECT}", "--all", "-x", ""])][: rng.randint(0, 1)]
        if rng.random() < 0.2:
            argv.insert(
                rng.randrange(len(argv) + 1),
                rng.choice(["--bogus", "-x", "--backend", "--", "--config=", f"--{INJECT}", "\x00"]),
            )
        case.argv = argv
        if rng.random() < 0.15:
            case.domain, what = self.mutate_bytes(base.domain)
        else:
            what = "domain intact"
        case.what = f"argv {argv!r:.80} / {what}"
