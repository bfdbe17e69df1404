"""The parsed config, cached beside the state so the hook's fast path needs no YAML parser.

Stdlib only (os, marshal): the hook imports this on every libvirt operation. The cache holds
the YAML document as plain data plus what the fast path asks (which domains the config
names, the error policy), keyed by the config file's identity (inode, size, mtime, ctime).
"""

import marshal
import os

VERSION = 4  # raised whenever what config.build_config accepts changes: an entry holds its verdict
# (3: the strict YAML loader, limits; 4: host_ports)


def signature(path: str) -> tuple[int, int, int, int] | None:
    """The config file's identity, or None when it does not exist."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_cache(cache_path: str, config_path: str) -> dict | None:  # type: ignore[type-arg]
    """The cached entry for ``config_path`` if it is still current, else None."""
    try:
        with open(cache_path, "rb") as handle:
            entry = marshal.loads(handle.read())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if (
        not isinstance(entry, dict)
        or entry.get("version") != VERSION
        or entry.get("path") != config_path
        or entry.get("signature") != signature(config_path)
    ):
        return None
    return entry


def write_cache(cache_path: str, entry: dict) -> None:  # type: ignore[type-arg]
    """Best effort: a reader without write access (``plan`` as a user) just parses again."""
    try:
        data = marshal.dumps({**entry, "version": VERSION})
    except ValueError:  # YAML produced something marshal cannot hold: do not cache
        return
    tmp = f"{cache_path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, cache_path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            return
