"""TCP probe run inside a namespace: `serve PORT` echoes after a "peer=IP" line; `connect HOST PORT SIZE`
sends SIZE bytes, reads the echo and prints one JSON line (ok, peer the server saw, bytes echoed);
`session HOST PORT` keeps one connection open and, per SIZE line on stdin, echoes SIZE bytes over it
(one JSON line each), to show that an established connection survives a change."""

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


def session(host: str, port: int, timeout: float) -> None:
    try:
        s = socket.create_connection((host, port), timeout=timeout)
        head = b""
        while not head.endswith(b"\n"):
            head += s.recv(1)
    except OSError as e:
        print(json.dumps({"ok": False, "error": f"connect: {type(e).__name__}: {e}"}), flush=True)
        return
    print(json.dumps({"ok": True, "peer": head.decode().strip().removeprefix("peer=")}), flush=True)
    for line in sys.stdin:
        payload = os.urandom(int(line))
        try:
            threading.Thread(target=s.sendall, args=(payload,), daemon=True).start()
            buf = bytearray()
            while len(buf) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            print(json.dumps({"ok": bytes(buf) == payload, "bytes": len(buf)}), flush=True)
        except OSError as e:
            print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "session":
        session(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        print(json.dumps(connect(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))))
