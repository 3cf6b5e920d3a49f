"""A real TCP probe between two namespaces: `python -m bgpnet.lab.probe serve|connect ...` plus a driver."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

from bgpnet.lab.netns import Netns
from bgpnet.lab.routers import package_root


def serve(address: str, port: int, timeout: float) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        s.listen(1)
        s.settimeout(timeout)
        print("listening", flush=True)
        conn, peer = s.accept()
        with conn:
            conn.settimeout(timeout)
            data = conn.recv(200).decode(errors="replace").strip()
            conn.sendall(f"pong from {address} to {peer[0]} ({data})\n".encode())
    return 0


def connect(address: str, port: int, source: str | None, timeout: float) -> int:
    try:
        with socket.create_connection((address, port), timeout=timeout,
                                      source_address=(source, 0) if source else None) as s:
            s.sendall(f"ping from {source or 'any'}\n".encode())
            print(s.recv(200).decode(errors="replace").strip())
    except OSError as e:
        print(f"cannot connect from {source or 'any'} to {address}:{port}: {e}", file=sys.stderr)
        return 1
    return 0


def tcp_probe(server: Netns, server_addr: str, client: Netns, client_addr: str | None, port: int = 8080,
              timeout: float = 5.0) -> tuple[bool, str]:
    """Listen in `server` on server_addr:port, connect from `client` (bound to client_addr); (ok, text)."""
    env = {**os.environ, "PYTHONPATH": package_root()}
    srv = server.popen([sys.executable, "-m", "bgpnet.lab.probe", "serve", server_addr, str(port),
                        "--timeout", str(timeout)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       env=env)
    try:
        first = srv.stdout.readline().strip()
        if first != "listening":
            return False, f"server in {server.name} did not start: {first} {srv.stdout.read().strip()}"
        argv = [sys.executable, "-m", "bgpnet.lab.probe", "connect", server_addr, str(port),
                "--timeout", str(timeout)] + (["--source", client_addr] if client_addr else [])
        p = subprocess.run(client.argv(*argv), capture_output=True, text=True, timeout=timeout + 10, env=env)
        return p.returncode == 0, (p.stdout or p.stderr).strip()
    finally:
        try:
            srv.wait(timeout=timeout + 1)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
        srv.stdout.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bgpnet.lab.probe")
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve", help="accept one connection, answer it, exit")
    s.add_argument("address")
    s.add_argument("port", type=int)
    s.add_argument("--timeout", type=float, default=10.0)
    c = sub.add_parser("connect", help="connect, send a line, print the answer")
    c.add_argument("address")
    c.add_argument("port", type=int)
    c.add_argument("--source")
    c.add_argument("--timeout", type=float, default=5.0)
    a = p.parse_args(argv)
    if a.mode == "serve":
        return serve(a.address, a.port, a.timeout)
    return connect(a.address, a.port, a.source, a.timeout)


if __name__ == "__main__":
    sys.exit(main())
