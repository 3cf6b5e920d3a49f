"""TCP probe run inside a namespace: `serve PORT` echoes after a "peer=IP" line; `connect HOST PORT SIZE`
sends SIZE bytes, reads the echo and prints one JSON line (ok, peer the server saw, bytes echoed)."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading


def serve(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(16)
    print("listening", flush=True)

    def handle(conn: socket.socket, peer) -> None:
        with conn:
            conn.sendall(f"peer={peer[0]}\n".encode())
            while data := conn.recv(65536):
                conn.sendall(data)

    while True:
        conn, peer = srv.accept()
        threading.Thread(target=handle, args=(conn, peer), daemon=True).start()


def connect(host: str, port: int, size: int, timeout: float) -> dict:
    payload = os.urandom(size)
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            sender = threading.Thread(
                target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)), daemon=True
            )
            sender.start()
            buf = bytearray()
            while chunk := s.recv(65536):
                buf += chunk
            sender.join(timeout)
    except OSError as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    head, _, echoed = bytes(buf).partition(b"\n")
    return {
        "ok": echoed == payload,
        "peer": head.decode(errors="replace").removeprefix("peer="),
        "bytes": len(echoed),
    }


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        print(json.dumps(connect(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))))
