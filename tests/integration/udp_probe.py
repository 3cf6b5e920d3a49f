"""A steady stream of UDP probes between two addresses, counting every lost one.

`python -m tests.integration.udp_probe echo ADDR PORT` answers each datagram;
`python -m tests.integration.udp_probe send SRC DST PORT --interval S` sends numbered datagrams until
SIGTERM, then waits a second for late answers and prints one JSON line: sent, answered, lost sequence
numbers and the longest run of consecutive losses.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import sys
import time


def echo(address: str, port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((address, port))
        print("listening", flush=True)
        while True:
            data, peer = s.recvfrom(64)
            s.sendto(data, peer)


def send(source: str, address: str, port: int, interval: float) -> int:
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    answered: set[int] = set()
    seq = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.setblocking(False)
        print("sending", flush=True)
        next_send = time.monotonic()
        drain_until = None
        while True:
            now = time.monotonic()
            if stop and drain_until is None:
                drain_until = now + 1.0
            if drain_until is not None and now >= drain_until:
                break
            if drain_until is None and now >= next_send:
                try:
                    s.sendto(seq.to_bytes(8, "big"), (address, port))
                except OSError:
                    pass  # no route / unreachable: counted as lost
                seq += 1
                next_send += interval
            ready, _, _ = select.select([s], [], [], max(0.0, min(next_send - time.monotonic(), 0.05)))
            if ready:
                try:
                    while True:
                        data, _ = s.recvfrom(64)
                        answered.add(int.from_bytes(data[:8], "big"))
                except (BlockingIOError, ConnectionRefusedError):
                    pass
    lost = [i for i in range(seq) if i not in answered]
    longest = run = 0
    for i in range(seq):
        run = run + 1 if i not in answered else 0
        longest = max(longest, run)
    print(json.dumps({"sent": seq, "answered": len(answered), "lost": lost[:200], "lost_count": len(lost),
                      "longest_gap": longest, "interval": interval}), flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.integration.udp_probe")
    sub = p.add_subparsers(dest="mode", required=True)
    e = sub.add_parser("echo")
    e.add_argument("address")
    e.add_argument("port", type=int)
    s = sub.add_parser("send")
    s.add_argument("source")
    s.add_argument("address")
    s.add_argument("port", type=int)
    s.add_argument("--interval", type=float, default=0.02)
    a = p.parse_args(argv)
    if a.mode == "echo":
        return echo(a.address, a.port)
    return send(a.source, a.address, a.port, a.interval)


if __name__ == "__main__":
    sys.exit(main())
