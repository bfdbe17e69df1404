"""The backends' names: the one list that the config, the selector, the CLI and messages use.

Imports nothing, so that config.py and the hook's stop path can know the names without importing
a backend; backends/__init__.py builds its registry against ``BACKENDS`` (a test checks that
they agree).
"""

IPTABLES = "iptables"
NFTABLES = "nftables"
NONE = "none"  # the do-nothing backend: records and plans, changes no rule
BACKENDS = (IPTABLES, NFTABLES, NONE)
FIREWALLS = (IPTABLES, NFTABLES)  # the backends that write rules; also libvirt's own firewall backends
AUTO = "auto"  # not a backend: follow libvirt's firewall (backends.choose_backend)
CHOICES = (AUTO, *BACKENDS)  # what `backend:` in the config and `plan --backend` accept


def expected() -> str:
    """The start of every message about a name that is not one of ours."""
    return f"expected one of {', '.join(CHOICES)}"
