"""Thin helpers over `ip netns` / `ip link`: namespaces, veth pairs, commands and daemons inside them."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence

log = logging.getLogger(__name__)


def sh(cmd: Sequence[str], check: bool = True, input: str | None = None, timeout: float = 60) -> str:
    """Run a command; return stdout; raise RuntimeError with stderr on failure."""
    p = subprocess.run(list(cmd), capture_output=True, text=True, input=input, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def unique_prefix(base: str = "bn") -> str:
    """A short per-run prefix for namespace and link names (interface names are limited to 15 chars)."""
    return f"{base}{uuid.uuid4().hex[:5]}"


def list_netns() -> list[str]:
    out = sh(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


class Netns:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    @classmethod
    def create(cls, name: str) -> Netns:
        sh(["ip", "netns", "add", name])
        ns = cls(name)
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    def exists(self) -> bool:
        return os.path.exists(f"/run/netns/{self.name}")

    def argv(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(self, *cmd: str, check: bool = True, input: str | None = None, timeout: float = 60) -> str:
        return sh(self.argv(*cmd), check=check, input=input, timeout=timeout)

    def popen(self, cmd: Sequence[str], **kw) -> subprocess.Popen:
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        return subprocess.Popen(self.argv(*cmd), **kw)

    def pids(self) -> list[int]:
        out = sh(["ip", "netns", "pids", self.name], check=False)
        return [int(x) for x in out.split()]

    def delete(self) -> None:
        """Kill whatever still runs inside, then remove the namespace (deleting alone kills nothing)."""
        if not self.exists():
            return
        for pid in self.pids():
            kill_pid(pid, timeout=2)
        sh(["ip", "netns", "delete", self.name], check=False)


def veth(a: Netns, a_if: str, b: Netns, b_if: str, mtu: int | None = None) -> None:
    """Create a veth pair with one end in each namespace, both up. Temp names avoid clashes in the root ns."""
    tmp_a, tmp_b = f"v{uuid.uuid4().hex[:10]}", f"v{uuid.uuid4().hex[:10]}"
    sh(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
    try:
        sh(["ip", "link", "set", tmp_a, "netns", a.name])
        sh(["ip", "link", "set", tmp_b, "netns", b.name])
    except RuntimeError:
        sh(["ip", "link", "del", tmp_a], check=False)
        raise
    for ns, tmp, final in ((a, tmp_a, a_if), (b, tmp_b, b_if)):
        ns.run("ip", "link", "set", tmp, "name", final)
        if mtu:
            ns.run("ip", "link", "set", final, "mtu", str(mtu))
        ns.run("ip", "link", "set", final, "up")


def kill_pid(pid: int, timeout: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """Signal a process, wait up to `timeout` for it to go, then SIGKILL."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap our own children so they do not linger as zombies
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
