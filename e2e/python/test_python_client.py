"""The PyPI `signalrcore` client against the signalbox streaming example.

signalrcore sends its negotiate request without `negotiateVersion`, so these
tests also cover negotiate v0 (the transport's `?id=` is the connectionId).
"""

from __future__ import annotations

import socket
import threading
import uuid

import pytest
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.types import HttpTransportType

TIMEOUT = 10
OPEN_TIMEOUT = 5

TRANSPORTS = [
    HttpTransportType.web_sockets,
    HttpTransportType.server_sent_events,
    HttpTransportType.long_polling,
]


class Waiter:
    """Collects values from callbacks on the client's threads."""

    def __init__(self) -> None:
        self.items: list = []
        self.cond = threading.Condition()

    def add(self, item) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def wait_for(self, pred, what: str):
        with self.cond:
            if not self.cond.wait_for(lambda: pred(self.items), timeout=TIMEOUT):
                raise AssertionError(f"timed out waiting for {what}; got {self.items!r}")
            return list(self.items)


def connect(server, transport: HttpTransportType):
    errors = Waiter()
    opened = threading.Event()
    conn = (
        HubConnectionBuilder()
        .with_url(f"{server.url}/hubs/features", options={"transport": transport})
        .build()
    )
    conn.on_open(opened.set)
    conn.on_error(errors.add)
    conn.start()
    assert opened.wait(OPEN_TIMEOUT), f"{transport.value}: connection did not open; server output:\n{server.output()}"
    return conn, errors


def close(conn) -> None:
    """Stops a connection without waiting for the server's next message.

    signalrcore's stop() closes its socket and joins its receive thread, which
    stays blocked in recv() until the server's next keep-alive ping (15 s);
    shutting the socket down first wakes it at once. Long polling has no such socket.
    """
    sock = getattr(getattr(getattr(conn, "transport", None), "_client", None), "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    conn.stop()


def invoke(conn, method: str, args: list):
    """Invokes `method` and returns its completion result (raises on an error completion)."""
    done = Waiter()
    conn.invoke(method, args, on_invocation=done.add)
    [completion] = done.wait_for(lambda items: len(items) >= 1, f"completion of {method}")
    assert not getattr(completion, "error", None), completion.error
    return completion.result


@pytest.fixture(params=TRANSPORTS, ids=lambda t: t.value)
def transport(request):
    return request.param


def test_echo(server, transport):
    conn, errors = connect(server, transport)
    try:
        assert invoke(conn, "Echo", ["hello from python"]) == "hello from python"
        assert invoke(conn, "Echo", [{"n": 1, "list": [1, 2]}]) == {"n": 1, "list": [1, 2]}
        assert invoke(conn, "GetTransport", []) == transport.value
        assert errors.items == []
    finally:
        close(conn)


# signalrcore's long-polling client takes only the first record of each poll body
# (`LongPollingClient._append`) and keeps the rest until another poll returns data, while
# servers (the official one and signalbox) answer a poll with everything queued. So over long
# polling these tests avoid bodies with several messages: the caller of Broadcast uses
# WebSockets (its Broadcast and Completion arrive together), the receiver the transport under
# test; streams, which queue several items at once, run over WebSockets and SSE only.
MULTI_MESSAGE_TRANSPORTS = [t for t in TRANSPORTS if t != HttpTransportType.long_polling]


def test_broadcast(server, transport):
    caller_transport = (
        HttpTransportType.web_sockets if transport == HttpTransportType.long_polling else transport
    )
    conn, errors = connect(server, caller_transport)
    other, other_errors = connect(server, transport)
    try:
        mine, theirs = Waiter(), Waiter()
        conn.on("Broadcast", lambda args: mine.add(args[0]))
        other.on("Broadcast", lambda args: theirs.add(args[0]))
        msg = f"py-{uuid.uuid4().hex[:8]}"
        assert invoke(conn, "Broadcast", [msg]) is None
        mine.wait_for(lambda items: msg in items, "Broadcast on the caller")
        theirs.wait_for(lambda items: msg in items, "Broadcast on the other client")
        assert errors.items == [] and other_errors.items == []
    finally:
        close(conn)
        close(other)


@pytest.mark.parametrize("transport", MULTI_MESSAGE_TRANSPORTS, ids=lambda t: t.value)
def test_counter_stream(server, transport):
    conn, errors = connect(server, transport)
    try:
        items, done = Waiter(), threading.Event()
        conn.stream("Counter", [5, 10]).subscribe(
            {"next": items.add, "complete": lambda _m: done.set(), "error": lambda e: items.add(("error", e))}
        )
        assert done.wait(TIMEOUT), f"stream did not complete; items {items.items!r}"
        assert items.items == [0, 1, 2, 3, 4]
        assert errors.items == []
    finally:
        close(conn)


def test_negotiate_v0_without_version(server):
    """What signalrcore relies on: no negotiateVersion → a v0 response without connectionToken."""
    import json
    import urllib.request

    req = urllib.request.Request(f"{server.url}/hubs/features/negotiate", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=TIMEOUT) as res:
        body = json.loads(res.read())
    assert body["negotiateVersion"] == 0
    assert body["connectionId"]
    assert "connectionToken" not in body
