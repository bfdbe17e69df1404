"""Guest addresses from the lease status file libvirt's dnsmasq helper writes.

``/var/lib/libvirt/dnsmasq/<bridge>.status``: a JSON list of objects with ``ip-address``,
``mac-address`` and ``expiry-time`` (0: never expires). libvirt rewrites it whole (temp
file + rename), so a reader never sees half a file; expired entries linger until then.

A lease counts (a forward may target its address) until EXPIRY_MARGIN seconds before its expiry
time: from that time on dnsmasq may give the address to another MAC, and the service, which acts
on a lease running out within about a second plus the work of removing the forward, must be done
by then (issue 14: never later than the old lease's expiry time).
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


Lease = tuple[str, IPv4Address, int]  # MAC (lower case), address, expiry-time (0: never expires)
EXPIRY_MARGIN = 3  # seconds before its expiry time a lease stops counting


def load_leases(path: str, now: float | None = None) -> dict[str, IPv4Address]:
    """MAC -> IPv4 address of every lease in ``path`` that counts at ``now``: one that never expires
    or runs out more than EXPIRY_MARGIN seconds later (a missing file: none)."""
    now = time.time() if now is None else now
    return {mac: lease[1] for mac, lease in current_leases(read_leases(path), now + EXPIRY_MARGIN).items()}


def read_leases(path: str) -> list[Lease]:
    """Every well-formed entry of ``path``, expired ones included, in file order (a missing file:
    none). Entries that are not a lease (a bad MAC, an IPv6 or malformed address) are skipped."""
    try:
        data = limits.read_file(path, limits.LEASE_FILE, "leases")
    except FileNotFoundError:
        return []
    if not data.strip():
        return []
    try:
        entries = json.loads(data)
    except ValueError as exc:  # also a number of more than 4,300 digits
        raise InputError("invalid lease file", f"not JSON: {str(exc)[:200]}", where=path) from None
    except RecursionError:
        raise InputError("invalid lease file", "nested too deeply (not a lease list)", where=path) from None
    if not isinstance(entries, list):
        raise InputError("invalid lease file", "expected a JSON list", where=path)
    leases = []
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
        if isinstance(parsed, IPv4Address):
            leases.append((mac, parsed, expiry))
    return leases


def current_leases(leases: list[Lease], now: float | None = None) -> dict[str, Lease]:
    """Per MAC, the lease a start would use: unexpired at ``now``, the latest to expire (the
    last in the file among equals; a lease that never expires ranks above all)."""
    now = time.time() if now is None else now
    best: dict[str, Lease] = {}
    for lease in leases:
        mac, _, expiry = lease
        if expiry and expiry < now:
            continue
        if mac not in best or (expiry or 2**63) >= (best[mac][2] or 2**63):
            best[mac] = lease
    holder: dict[IPv4Address, Lease] = {}  # an address two MACs hold: the newer lease's (dnsmasq gave it again)
    for lease in best.values():
        other = holder.get(lease[1])
        if other is None or (lease[2] or 2**63) > (other[2] or 2**63):
            holder[lease[1]] = lease
    return {mac: lease for mac, lease in best.items() if holder[lease[1]] is lease}


def next_expiry(leases: list[Lease], macs: set[str], now: float | None = None) -> float | None:
    """When the first lease of ``macs`` that counts at ``now`` stops counting (EXPIRY_MARGIN
    seconds before its expiry time; None: none of them expires)."""
    now = time.time() if now is None else now
    current = current_leases(leases, now + EXPIRY_MARGIN)
    expiries = [lease[2] for mac, lease in current.items() if mac in macs and lease[2]]
    return float(min(expiries) - EXPIRY_MARGIN) if expiries else None
