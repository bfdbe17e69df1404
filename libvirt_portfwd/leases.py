"""Guest addresses from the lease status file libvirt's dnsmasq helper writes.

``/var/lib/libvirt/dnsmasq/<bridge>.status``: a JSON list of objects with ``ip-address``,
``mac-address`` and ``expiry-time`` (0: never expires). libvirt rewrites it whole (temp
file + rename), so a reader never sees half a file; expired entries linger until then.
"""

import json
import os
import time
from ipaddress import IPv4Address, ip_address

from . import limits
from .errors import InputError
from .forward import is_mac


def lease_path(dnsmasq_dir: str, bridge: str) -> str:
    return os.path.join(dnsmasq_dir, f"{bridge}.status")


def load_leases(path: str, now: float | None = None) -> dict[str, IPv4Address]:
    """MAC -> IPv4 address of every unexpired lease in ``path`` (a missing file: none)."""
    try:
        data = limits.read_file(path, limits.LEASE_FILE, "leases")
    except FileNotFoundError:
        return {}
    if not data.strip():
        return {}
    try:
        entries = json.loads(data)
    except ValueError as exc:  # also a number of more than 4,300 digits
        raise InputError("invalid lease file", f"not JSON: {str(exc)[:200]}", where=path) from None
    except RecursionError:
        raise InputError("invalid lease file", "nested too deeply (not a lease list)", where=path) from None
    if not isinstance(entries, list):
        raise InputError("invalid lease file", "expected a JSON list", where=path)
    now = time.time() if now is None else now
    best: dict[str, tuple[int, IPv4Address]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        mac, address, expiry = entry.get("mac-address"), entry.get("ip-address"), entry.get("expiry-time", 0)
        if not isinstance(mac, str) or not isinstance(address, str) or type(expiry) is not int:
            continue
        mac = mac.lower()
        if not is_mac(mac) or len(address) > 15:  # libvirt's own file, read like user input
            continue
        try:
            parsed = ip_address(address)
        except ValueError:
            continue
        if not isinstance(parsed, IPv4Address) or (expiry and expiry < now):
            continue
        rank = expiry or 2**63
        if mac not in best or rank >= best[mac][0]:
            best[mac] = (rank, parsed)
    return {mac: address for mac, (_, address) in best.items()}
