"""Templates -> ruleset text. One Jinja2 environment; quoting and formatting live in filters.

templates/ sits at the top of the checkout and is installed to <prefix>/share/libvirt-portfwd/
templates; template_dir() finds it the same way in both.
"""

import sys
from functools import cache
from pathlib import Path

import jinja2

from . import names

TEMPLATE_SUBDIR = ("share", "libvirt-portfwd", "templates")


def template_dir() -> Path:
    """The checkout's templates/ next to the package, else the installed copy under sys.prefix."""
    for candidate in (
        Path(__file__).resolve().parent.parent / "templates",
        Path(sys.prefix).joinpath(*TEMPLATE_SUBDIR),
    ):
        if (candidate / "iptables.j2").is_file():
            return candidate
    raise FileNotFoundError(f"libvirt-portfwd templates not found next to {__file__} nor under {sys.prefix}")


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        # compiling the template costs more than the rest of a hook run: keep the compiled code
        # (jinja2's per-user cache directory, created private, under the temp dir)
        bytecode_cache=jinja2.FileSystemBytecodeCache(),
    )
    env.filters.update(
        chain=names.domain_chain, tag=names.tag, ports=format_ports, iptports=format_iptables_ports, quote=quote
    )
    env.globals.update(
        dispatch=names.DISPATCH_CHAIN,
        project_tag=names.tag(),
        table=names.NFT_TABLE,
        libvirt_table=names.LIBVIRT_NFT_TABLE,
        gate_chain=names.LIBVIRT_NFT_GATE_CHAIN,
    )
    return env


def render(template: str, **context: object) -> str:
    return environment().get_template(template).render(**context)


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
