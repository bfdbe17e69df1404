"""The warm path: a hook hands its work to the resident service over a root-only socket.

A hook's cost is mostly a fresh interpreter importing lxml, jinja2 and the model; the service
has them imported already. So where the service runs, the hook (stdlib only, not even the
``socket`` module: ``_socket`` is a builtin) sends its request and waits for the answer; the
service does the work with the same code the hook would run (intents.py, actions.py), under
the same lock, and sends back what the hook would have said. On any failure (no socket, no
answer within WAIT, the service killed, a request it declines) the hook does the work itself.

One request per connection, one line (tab-separated fields) and a body, then the hook shuts
its sending side:

    apply   <domain> <uuid> <config> <until>  + the domain XML   (started, reconnect)
    remove  <domain> <uuid> <config> <until>                     (stopped, release)
    check   <domain> -      <config> <until>  + the domain XML   (prepare, where on_error: block)

``until`` is when the hook stops waiting (CLOCK_MONOTONIC, the same clock in every process): a
request read later, or whose hook has closed its socket, is not carried out (the hook does it).

The service answers ``queued\\n`` once its intent is written (state.py), then one final line,
``ok\\t<outcome>``, ``error\\t<message>`` or ``decline\\t<why>``, and after it whatever it wrote
to stderr meanwhile (so that libvirt's log gets the same lines either way). Nothing is done
twice: before ``queued`` the service has changed nothing, so the hook does everything itself;
after it the intent is on disk, so the hook only carries out pending intents, and finds its
own already done if the service got that far ("done meanwhile").
"""

import os

from . import deadline
from .errors import PortfwdError
from .paths import Paths, is_uuid

TYPE_CHECKING = False  # no typing import at run time (hook fast path)
if TYPE_CHECKING:
    from collections.abc import Callable

WAIT = 5.0  # seconds a hook waits for the service's answer (of policy.BOUND); then it works itself
CONNECT = 0.2  # seconds to connect: a live service accepts at once (its backlog), a dead one refuses
REQUEST_MAX = 4 << 20  # bytes the service reads of a request: more than limits.DOMAIN_XML
OPS = ("apply", "remove", "check")
QUEUED, OK, ERROR, DECLINE = "queued", "ok", "error", "decline"


class Answered(PortfwdError):
    """The service's error, as it would have been raised here: printed as it said it."""

    def __init__(self, message: str) -> None:
        super().__init__("service", message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Reply:
    """What came back: ``queued`` (the service wrote the intent), the final status and text,
    and the service's stderr lines. ``status`` is None when no final line arrived."""

    __slots__ = ("queued", "status", "stderr", "text")

    def __init__(self, data: bytes) -> None:
        self.queued = data.startswith(b"queued\n")
        rest = data[len(b"queued\n") :] if self.queued else data
        line, newline, self.stderr = rest.partition(b"\n")
        status, _, text = line.decode("utf-8", "replace").partition("\t")
        self.status: str | None = status if newline and status in (OK, ERROR, DECLINE) else None
        self.text = text

    def outcome(self) -> str:
        """The final answer as the hook's own work would have ended: the outcome, or raised."""
        if self.stderr:
            os.write(2, self.stderr)
        if self.status == ERROR:
            raise Answered(self.text)
        return self.text


def ask(paths: Paths, op: str, name: str, key: str, body: bytes = b"") -> Reply | None:
    """Send one request; None when the service is not there (no socket, refused, not accepting)."""
    import _socket
    import time

    path = paths.service_socket
    if not os.path.exists(path):
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT)
        try:
            sock.connect(path)
        except OSError:
            return None
        until = time.monotonic() + deadline.remaining(WAIT)  # CLOCK_MONOTONIC: the service's clock too
        head = "\t".join((op, name, key, paths.config, f"{until:.3f}")).replace("\n", " ")
        received = []
        try:
            sock.settimeout(deadline.remaining(WAIT) or 0.001)
            sock.sendall(head.encode("utf-8", "replace") + b"\n" + body)
            sock.shutdown(_socket.SHUT_WR)
            while chunk := sock.recv(65536):
                received.append(chunk)
        except OSError:  # timed out, reset (the service killed): what came so far says how far it got
            pass
        return Reply(b"".join(received))
    finally:
        sock.close()


def hand_over(
    paths: Paths, op: str, name: str, key: str, body: bytes, itself: "Callable[[], str]", pending: "Callable[[], str]"
) -> str:
    """The hook's work by the service, else by the hook: ``itself`` (everything, as without a
    service) unless the service queued the request, then ``pending`` (carry out what is pending)."""
    reply = ask(paths, op, name, key, body)
    if reply is not None and reply.status in (OK, ERROR):
        return reply.outcome()
    return pending() if reply is not None and reply.queued else itself()


def serve(conn: "_Conn", paths: Paths) -> None:
    """The service's side: read one request from ``conn``, do it as the hook would have, answer."""
    import io
    import struct
    import sys
    import time
    import traceback

    from . import log

    uid = struct.unpack("3i", conn.getsockopt(_SOL_SOCKET, _SO_PEERCRED, 12))[1]
    if uid not in (0, os.getuid()):
        return  # a socket only root may open; closed without a word
    conn.settimeout(2.0)
    data = _read(conn)
    head, _, body = data.partition(b"\n")
    fields = head.decode("utf-8", "replace").split("\t")
    if len(fields) != 5 or fields[0] not in OPS or len(data) > REQUEST_MAX or len(fields[1]) > 1000:
        conn.sendall(f"{DECLINE}\ta request of another shape\n".encode())
        return
    op, name, key, config, until = fields
    if config != paths.config or (op == "remove" and not is_uuid(key)):
        conn.sendall(f"{DECLINE}\tanother config, or no domain UUID\n".encode())
        return
    if _gone(conn, until):  # it gave up waiting (the service was stopped, or busy): it works itself
        return
    captured, stderr = io.StringIO(), sys.stderr
    sys.stderr = captured
    deadline.start(max(0.0, float(until) - time.monotonic() - 0.3))  # done before the hook gives up
    try:
        final = f"{OK}\t{_do(conn, paths, op, name, key, body)}"
    except PortfwdError as exc:
        final = f"{ERROR}\t{exc.for_domain(name)}"
    except Exception as exc:  # a bug or the system refusing: the hook does it itself, and says so
        log.trace(traceback.format_exc())
        final = f"{DECLINE}\t{type(exc).__name__}: {exc}"
    finally:
        deadline.stop()
        sys.stderr = stderr
    conn.sendall(" ".join(final.splitlines()).encode("utf-8", "replace") + b"\n" + captured.getvalue().encode())


def _gone(conn: "_Conn", until: str) -> bool:
    """Has the hook stopped waiting: past the time it said, or its socket closed (not just its
    sending side, which it shuts after the request)?"""
    import select
    import time

    try:
        if time.monotonic() > float(until):
            return True
    except ValueError:
        return True
    poller = select.poll()
    poller.register(conn, select.POLLIN)
    return any(events & select.POLLHUP for _, events in poller.poll(0))


def _do(conn: "_Conn", paths: Paths, op: str, name: str, key: str, body: bytes) -> str:
    def queued() -> None:
        conn.sendall(f"{QUEUED}\n".encode())

    if op == "check":
        from .actions import check

        check(body, paths)
        return "checked"
    from . import intents

    if op == "apply":
        return intents.apply(body, paths, queued)
    return intents.remove(key, paths, name, queued)


def _read(conn: "_Conn") -> bytes:
    chunks, size = [], 0
    while size <= REQUEST_MAX and (chunk := conn.recv(65536)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


_SOL_SOCKET, _SO_PEERCRED = 1, 17  # Linux
if TYPE_CHECKING:
    import socket

    _Conn = socket.socket
