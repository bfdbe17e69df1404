"""Guest addresses from the lease status file libvirt's dnsmasq helper writes.

``/var/lib/libvirt/dnsmasq/<bridge>.status``: a JSON list of objects with ``ip-address``,
``mac-address`` and ``expiry-time`` (0: never expires). libvirt rewrites it whole (temp
file + rename), so a reader never sees half a file; expired entries linger until then.
"""

import json
import os
import time
from ipaddress import IPv4Address, ip_address

from .errors import InputError


def lease_path(dnsmasq_dir: str, bridge: str) -> str:
    return os.path.join(dnsmasq_dir, f"{bridge}.status")


def load_leases(path: str, now: float | None = None) -> dict[str, IPv4Address]:
    """MAC -> IPv4 address of every unexpired lease in ``path`` (a missing file: none)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InputError("cannot read leases", exc.strerror or str(exc), where=path) from None
    if not data.strip():
        return {}
    try:
        entries = json.loads(data)
    except ValueError as exc:
        raise InputError("invalid lease file", f"not JSON: {exc}", where=path) from None
    if not isinstance(entries, list):
        raise InputError("invalid lease file", "expected a JSON list", where=path)
    now = time.time() if now is None else now
    best: dict[str, tuple[int, IPv4Address]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        mac, address, expiry = entry.get("mac-address"), entry.get("ip-address"), entry.get("expiry-time", 0)
        if not isinstance(mac, str) or not isinstance(address, str) or not isinstance(expiry, int):
            continue
        try:
            parsed = ip_address(address)
        except ValueError:
            continue
        if not isinstance(parsed, IPv4Address) or (expiry and expiry < now):
            continue
        rank = expiry or 2**63
        mac = mac.lower()
        if mac not in best or rank >= best[mac][0]:
            best[mac] = (rank, parsed)
    return {mac: address for mac, (_, address) in best.items()}
