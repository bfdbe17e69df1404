"""nft's commands run by libnftables (the library the ``nft`` command is made of) inside this
process, on one context kept open: the resident service's way (service.py turns it on).

Every ``nft`` process pays the kernel's netlink teardown after its batch: 12-14 ms of waiting
here (bench row 9), more than everything else a transaction costs. A context kept open pays it
once; firewalld keeps one the same way (python3-nftables). The commands are the argv lists the
backends run (run.py), and their output and errors are nft's, so no caller sees a difference.
Anything else (another command, flags we do not know, the library missing) runs as a process.
"""

import ctypes

LIBRARY = "libnftables.so.1"
JSON, HANDLE = 1 << 4, 1 << 3  # NFT_CTX_OUTPUT_JSON, NFT_CTX_OUTPUT_HANDLE
FLAGS = {"-j": JSON, "-a": HANDLE}


class Context:
    """One nft_ctx, its output and errors buffered (as nft would print them)."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(LIBRARY, use_errno=True)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_char_p
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise OSError(f"{LIBRARY}: nft_ctx_new failed")
        if lib.nft_ctx_buffer_output(ctx) or lib.nft_ctx_buffer_error(ctx):
            raise OSError(f"{LIBRARY}: cannot buffer its output")
        self.lib, self.ctx = lib, ctx

    def run(self, flags: int, commands: str) -> tuple[int, str, str]:
        self.lib.nft_ctx_output_set_flags(self.ctx, flags)
        code = self.lib.nft_run_cmd_from_buffer(self.ctx, commands.encode())
        out = self.lib.nft_ctx_get_output_buffer(self.ctx) or b""
        err = self.lib.nft_ctx_get_error_buffer(self.ctx) or b""
        return (0 if code == 0 else 1), out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


_context: Context | None = None


def use() -> bool:
    """Run nft's commands in this process from now on, if the library loads."""
    global _context
    try:
        _context = Context()
    except (OSError, AttributeError):  # no libnftables (or too old): processes, as before
        _context = None
    return _context is not None


def run(argv: list[str], stdin: str | None) -> tuple[int, str, str] | None:
    """``nft [-j] [-a] COMMAND...`` or ``nft -f -`` (commands on stdin) as nft would end it, or
    None: not ours to run here (run.py starts the process)."""
    if _context is None or not argv or argv[0] != "nft":
        return None
    flags, words = 0, argv[1:]
    while words and words[0] in FLAGS:
        flags |= FLAGS[words.pop(0)]
    if words == ["-f", "-"]:
        commands = stdin or ""
    elif words and not words[0].startswith("-") and stdin is None:
        commands = " ".join(words)  # our argv words: keywords, names, handles (no quoting needed)
    else:
        return None
    return _context.run(flags, commands)
