"""Fixtures for the Python-client end-to-end tests: the signalbox streaming example server."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STREAMING_BIN = os.environ.get(
    "SIGNALBOX_STREAMING_BIN", str(REPO_ROOT / "target" / "debug" / "examples" / "streaming")
)
LISTEN_RE = re.compile(r"Now listening on: (http://\S+)")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log: list[str]):
        self.proc = proc
        self.url = url
        self.log = log

    def output(self) -> str:
        return "".join(self.log[-200:])


@pytest.fixture(scope="session")
def server():
    """Starts the streaming example on an ephemeral port for the whole session."""
    if not Path(STREAMING_BIN).exists():
        pytest.fail(
            f"streaming example not found at {STREAMING_BIN}; build it with "
            "`cargo build -p signalbox --example streaming` or set SIGNALBOX_STREAMING_BIN"
        )
    proc = subprocess.Popen(
        [STREAMING_BIN, "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log: list[str] = []
    found = threading.Event()
    url_box: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = ANSI_RE.sub("", line)
            log.append(line)
            del log[:-2000]
            m = LISTEN_RE.search(line)
            if m and not url_box:
                url_box.append(m.group(1).rstrip("/"))
                found.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 60
    while not found.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("streaming example did not start:\n" + "".join(log))
    srv = Server(proc, url_box[0], log)
    try:
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
