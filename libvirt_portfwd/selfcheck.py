"""``boot.py check``: does this runtime work? install.sh runs it on a new release before it
switches to it, so that a release that cannot run never becomes the installed one."""

import importlib
import os
import pkgutil

from . import __name__ as PACKAGE
from .errors import PortfwdError

DEPENDENCIES = ("lxml.etree", "jinja2", "yaml", "libvirt")


def check(argv: list[str]) -> int:
    """Import every module of ours and every dependency, and load every template."""
    from . import render

    root = os.path.dirname(os.path.abspath(__file__))
    modules = [m.name for m in pkgutil.walk_packages([root], prefix=f"{PACKAGE}.")]
    for name in [*modules, *DEPENDENCIES]:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise PortfwdError("self-check failed", f"import {name}: {type(exc).__name__}: {exc}") from None
    environment = render.environment()
    for template in environment.list_templates(extensions=["j2"]):
        environment.get_template(template)
    return 0
