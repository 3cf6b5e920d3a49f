"""The API helper ExaBGP runs: copies ExaBGP's JSON lines to the agent's unix socket and commands back.

Stdlib only, so ExaBGP starts it fast. Exits 0 when stdin closes (ExaBGP gone), 1 when the socket drops.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

CONNECT_TIMEOUT = 10.0


def connect(path: str, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError as e:
            s.close()
            if time.monotonic() >= deadline:
                raise SystemExit(f"bgpnet relay: cannot connect to {path}: {e}") from None
            time.sleep(0.1)


def socket_to_stdout(sock: socket.socket) -> None:
    """Commands from the agent to ExaBGP. If the agent goes, exit non-zero so ExaBGP notices."""
    out = sys.stdout.buffer
    with sock.makefile("rb") as f:
        for line in f:
            out.write(line)
            out.flush()
    print("bgpnet relay: agent socket closed", file=sys.stderr, flush=True)
    os._exit(1)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bgpnet.speaker.relay SOCKET", file=sys.stderr)
        return 2
    sock = connect(argv[0])
    threading.Thread(target=socket_to_stdout, args=(sock,), daemon=True).start()
    stdin = sys.stdin.buffer
    try:
        for line in stdin:
            sock.sendall(line)
    except OSError as e:
        print(f"bgpnet relay: agent socket failed: {e}", file=sys.stderr, flush=True)
        os._exit(1)
    # ExaBGP closed our stdin: it is gone or stopping
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
