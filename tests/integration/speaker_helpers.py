"""Run `bgpnet.speaker.demo_peer` inside a namespace and watch the events it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from bgpnet.lab.netns import Netns, kill_pid

ROOT = Path(__file__).resolve().parents[2]


class DemoPeer:
    def __init__(self, ns: Netns, spec: dict, stderr_path: Path):
        self.ns = ns
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self._stderr = open(stderr_path, "wb")  # noqa: SIM115 - closed in close()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = ns.popen(
            [sys.executable, "-m", "bgpnet.speaker.demo_peer", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._lock:
                self.events.append(json.loads(line))

    def send(self, cmd: dict) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def find(self, pred, start: int = 0) -> dict | None:
        with self._lock:
            for e in self.events[start:]:
                if pred(e):
                    return e
        return None

    def mark(self) -> int:
        with self._lock:
            return len(self.events)

    def wait(self, pred, timeout: float = 30.0, start: int = 0, what: str = "event") -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            e = self.find(pred, start)
            if e is not None:
                return e
            if self.proc.poll() is not None and self.find(pred, start) is None:
                break
            time.sleep(0.1)
        with self._lock:
            tail = self.events[-8:]
        raise TimeoutError(f"{self.ns.name}: no {what} within {timeout:.0f}s; last events: {tail}")

    def status(self, timeout: float = 10.0) -> dict:
        start = self.mark()
        self.send({"status": True})
        return self.wait(lambda e: e["event"] == "status", timeout, start, "status")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"stop": True})
                self.proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                kill_pid(self.proc.pid)
        self._stderr.close()


def announced(prefix: str, next_hop: str | None = None):
    def pred(e: dict) -> bool:
        return e["event"] == "Update" and any(
            p["prefix"] == prefix and (next_hop is None or p["next_hop"] == next_hop) for p in e["announced"]
        )
    return pred


def withdrawn(prefix: str):
    return lambda e: e["event"] == "Update" and prefix in e["withdrawn"]


def event(name: str, **fields):
    return lambda e: e["event"] == name and all(e.get(k) == v for k, v in fields.items())
