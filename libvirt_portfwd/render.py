"""Templates -> ruleset text. One Jinja2 environment; quoting and formatting live in filters.

templates/ sits beside the package, at the top of the checkout and of an installed release
(/opt/libvirt-portfwd/current); template_dir() finds it there in both.

Rendered text is cached (``use_cache``: a directory under the run dir, root's only): a domain
restarted with the same forwards on the same firewall state renders the same ruleset, and then
jinja2 (the largest import of a hook run) is not imported at all. The key is the template's
name, its file's and this code's stamps (path, mtime, size) and the repr of the context (frozen
dataclasses of tuples, strings and addresses: deterministic), so any change is a miss.
"""

import os
import zlib
from functools import cache

from . import names

TYPE_CHECKING = False  # as elsewhere here: no `typing` import at run time
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    import jinja2


def template_dir() -> str:
    """templates/ beside the package: in a checkout and in an installed release alike.
    (os.path, not pathlib: this module is on the hook's path even when nothing is rendered.)"""
    directory = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "templates")
    if not os.path.isfile(os.path.join(directory, "iptables.j2")):
        raise FileNotFoundError(f"libvirt-portfwd templates not found in {directory}")
    return directory


@cache
def environment() -> "jinja2.Environment":
    import jinja2

    from .backends.nft_text import gate_deletion

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir()),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        # compiling the template costs more than the rest of a hook run: keep the compiled code
        bytecode_cache=jinja2.FileSystemBytecodeCache(directory) if (directory := _bytecode_dir()) else None,
    )
    env.filters.update(
        chain=names.domain_chain,
        tag=names.tag,
        ports=format_ports,
        iptports=format_iptables_ports,
        quote=quote,
        elements=format_elements,
        shifted=format_shifted,
        gate_deletion=gate_deletion,
    )
    env.globals.update(
        project_tag=names.tag(),
        table=names.NFT_TABLE,
        libvirt_table=names.LIBVIRT_NFT_TABLE,
        gate_chain=names.LIBVIRT_NFT_GATE_CHAIN,
    )
    return env


CACHE_LIMIT = 256  # entries; the oldest half goes when a write finds more
CACHE_ENTRY_MAX = 128 * 1024  # characters of key and text: larger renders (rebuilds) are not kept
_cache_dir: str | None = None


def _bytecode_dir() -> str | None:
    """RUN_DIR/jinja2 beside the render cache (removed with the run dir), else none: no cache
    is kept where no run dir is in use (``plan`` as a user, install.sh's self-check)."""
    if _cache_dir is None:
        return None
    directory = os.path.join(os.path.dirname(_cache_dir), "jinja2")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError:
        return None
    return directory


def use_cache(run_dir: str) -> None:
    """Cache rendered text in RUN_DIR/render (created 0700)."""
    global _cache_dir
    _cache_dir = os.path.join(run_dir, "render")


def render(template: str, *, cached: bool = True, **context: object) -> str:
    """The template rendered with context; ``cached``: look in and fill the cache (callers say
    False for rebuilds of many domains, whose repr alone would cost more than it saves)."""
    if _cache_dir is None or not cached:
        return environment().get_template(template).render(**context)
    key = f"{template}\n{_stamps(template)}\n{sorted(context.items())!r}\0"
    path = os.path.join(_cache_dir, f"{zlib.crc32(key.encode()):08x}-{len(key)}")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        if text.startswith(key):
            return text[len(key) :]
    except OSError:
        pass
    rendered = environment().get_template(template).render(**context)
    if len(key) + len(rendered) <= CACHE_ENTRY_MAX:
        _store(_cache_dir, path, key + rendered)
    return rendered


@cache
def _stamps(template: str) -> str:
    files = (os.path.join(template_dir(), template), __file__, names.__file__)
    return " ".join(f"{f}:{(st := os.stat(f)).st_mtime_ns}:{st.st_size}" for f in files)


def _store(directory: str, path: str, text: str) -> None:
    """Atomically, best effort: a cache that cannot be written is only slower."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        entries = os.listdir(directory)
        if len(entries) >= CACHE_LIMIT:
            stamped = sorted(entries, key=lambda e: os.stat(os.path.join(directory, e)).st_mtime_ns)
            for entry in stamped[: len(stamped) // 2]:
                os.unlink(os.path.join(directory, entry))
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError:
        pass


def quote(text: str) -> str:
    """An nft string literal (interface names are validated before; quoting stays here)."""
    if '"' in text or "\\" in text:
        raise ValueError(f"cannot quote {text!r} for nft")
    return f'"{text}"'


def format_ports(start: int, end: int) -> str:
    """nft / DNAT style: ``80`` or ``80-90``."""
    return str(start) if start == end else f"{start}-{end}"


def format_iptables_ports(start: int, end: int) -> str:
    """iptables match style: ``80`` or ``80:90``."""
    return str(start) if start == end else f"{start}:{end}"


def format_elements(entries: "Iterable[Any]") -> str:
    """nft map elements ``key comment "<tag>" : value, ...`` (Entry: key, value, uuid). In Python,
    not a template loop: a domain may have 65,535 of them, and a loop costs ten times as much."""
    return ", ".join(f'{e.key} comment "{names.tag(e.uuid)}" : {e.value}' for e in entries)


def format_shifted(forward: "Any") -> str:
    """The anonymous map of a range whose guest ports are shifted: ``port : guest . port', ...``."""
    shift = forward.guest_port - forward.start
    return ", ".join(f"{port} : {forward.guest} . {port + shift}" for port in range(forward.start, forward.end + 1))
