"""The relay ExaBGP runs: line copying both ways, exit codes, waiting for the socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_relay(sock_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bgpnet.speaker.relay", str(sock_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_copies_both_ways_and_exits_0_when_stdin_closes(tmp_path):
    path = tmp_path / "api.sock"
    relay = start_relay(path)  # started before the socket exists: it must wait for it
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    srv.settimeout(10)
    conn, _ = srv.accept()
    conn.settimeout(10)
    relay.stdin.write(b'{"type": "state"}\n')
    relay.stdin.flush()
    assert conn.makefile("rb").readline() == b'{"type": "state"}\n'
    conn.sendall(b"neighbor 10.0.0.2 announce eor ipv4 unicast\n")
    assert relay.stdout.readline() == b"neighbor 10.0.0.2 announce eor ipv4 unicast\n"
    relay.stdin.close()
    assert relay.wait(10) == 0
    conn.close()
    srv.close()


def test_exits_nonzero_when_agent_socket_drops(tmp_path):
    path = tmp_path / "api.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    srv.settimeout(10)
    relay = start_relay(path)
    conn, _ = srv.accept()
    conn.close()
    srv.close()
    assert relay.wait(10) == 1
    assert b"agent socket closed" in relay.stderr.read()


def test_gives_up_when_socket_never_appears(tmp_path, monkeypatch):
    from bgpnet.speaker import relay

    result = {}

    def run():
        try:
            relay.connect(str(tmp_path / "missing.sock"), timeout=0.3)
        except SystemExit as e:
            result["error"] = str(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    assert "cannot connect" in result["error"] and "missing.sock" in result["error"]
