"""Shared pieces of the benchmarks: a netlink route watcher, process footprint, BIRD and agent set-ups.

Everything runs in namespaces the benchmark creates (per-run name prefix) and is torn down by PID.
"""

from __future__ import annotations

import json
import os
import select
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import yaml

from bgpnet.ipip.netlink import (
    NLMSG_DONE,
    NLMSGHDR,
    RTA,
    RTA_DST,
    RTM_DELROUTE,
    RTM_NEWROUTE,
    RTMSG,
    SOL_NETLINK,
    dump_routes,
    open_socket,
)
from bgpnet.lab.netns import Netns, wait_for

NETLINK_ADD_MEMBERSHIP = 1
RTNLGRP_IPV4_ROUTE = 7
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def test_prefixes(n: int, base: str = "10.64.0.0", length: int = 26) -> list[IPv4Network]:
    """`n` consecutive prefixes of `length` from `base` (10k /26s span 10.64.0.0-10.73.195.255)."""
    start, size = int(IPv4Address(base)), 1 << (32 - length)
    return [IPv4Network((start + i * size, length)) for i in range(n)]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------------------------------- route watcher


class RouteWatcher:
    """Counts kernel routes inside `within` in a namespace, from rtnetlink notifications (no polling).

    A thread reads RTM_NEWROUTE/RTM_DELROUTE events and keeps the set of destinations; `wait_count(n)`
    returns the monotonic time of the event that made the count reach `n`. If the kernel drops
    notifications (ENOBUFS) the set is rebuilt from a full dump and the loss is counted in `overruns`.
    """

    def __init__(self, netns: str, within: IPv4Network):
        self.netns = netns
        self.lo = int(within.network_address)
        self.hi = int(within.broadcast_address)
        self.dsts: set[tuple[int, int]] = set()
        self.overruns = 0
        self.events = 0
        self._cond = threading.Condition()
        self._reached: dict[int, float] = {}
        self._stop = False
        self.sock = open_socket(netns)
        self.sock.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE: bursts of 10k+ events
        self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_IPV4_ROUTE)
        self._resync()
        self._thread = threading.Thread(target=self._run, name=f"watch-{netns}", daemon=True)
        self._thread.start()

    def _resync(self) -> None:
        with open_socket(self.netns) as s:
            dsts = {(dst, ln) for _t, _p, _ty, _f, dst, ln, _prio, _h in dump_routes(s)
                    if self.lo <= dst <= self.hi}
        with self._cond:
            self.dsts = dsts
            self._cond.notify_all()

    def count(self) -> int:
        with self._cond:
            return len(self.dsts)

    def _run(self) -> None:
        buf = bytearray(1 << 20)
        hdr, rtm, rta = NLMSGHDR.unpack_from, RTMSG.unpack_from, RTA.unpack_from
        be32 = struct.Struct("!I").unpack_from
        while not self._stop:
            r, _, _ = select.select([self.sock], [], [], 0.2)
            if not r:
                continue
            try:
                n = self.sock.recv_into(buf)
            except OSError as e:
                if e.errno == 105:  # ENOBUFS: events were lost; start again from the kernel's view
                    self.overruns += 1
                    self._resync()
                    continue
                if self._stop:
                    return
                raise
            now = time.monotonic()
            data = memoryview(buf)[:n]
            off = 0
            with self._cond:
                while off + NLMSGHDR.size <= n:
                    length, mtype, _fl, _seq, _pid = hdr(data, off)
                    if length < NLMSGHDR.size or mtype == NLMSG_DONE:
                        break
                    if mtype in (RTM_NEWROUTE, RTM_DELROUTE):
                        family, dst_len = rtm(data, off + NLMSGHDR.size)[:2]
                        dst = 0
                        pos, end = off + NLMSGHDR.size + RTMSG.size, off + length
                        while pos + 4 <= end:
                            alen, atype = rta(data, pos)
                            if alen < 4:
                                break
                            if atype == RTA_DST:
                                dst = be32(data, pos + 4)[0]
                                break
                            pos += (alen + 3) & ~3
                        if family == socket.AF_INET and self.lo <= dst <= self.hi:
                            self.events += 1
                            if mtype == RTM_NEWROUTE:
                                self.dsts.add((dst, dst_len))
                            else:
                                self.dsts.discard((dst, dst_len))
                    off += (length + 3) & ~3
                self._reached.setdefault(len(self.dsts), now)
                self._cond.notify_all()

    def mark(self) -> None:
        """Forget when counts were reached: call just before a trigger."""
        with self._cond:
            self._reached.clear()

    def wait_count(self, target: int, timeout: float) -> float:
        """Block until exactly `target` routes are present; the monotonic time that count was first
        reached since `mark()`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.dsts) != target:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.netns}: {len(self.dsts)} routes, waiting for {target}")
                self._cond.wait(min(left, 0.5))
            return self._reached.get(target, time.monotonic())

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()


# ---------------------------------------------------------------------------------------- footprint


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (the agent, its ExaBGP, ExaBGP's API relay)."""
    kids = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def idle_cpu_percent(pid_sets: dict[str, Callable[[], list[int]]], seconds: float) -> dict[str, float]:
    """CPU use of each process set over the same `seconds` window, in % of one core."""
    start = {k: cpu_seconds(f()) for k, f in pid_sets.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    return {k: 100.0 * (cpu_seconds(f()) - start[k]) / dt for k, f in pid_sets.items()}


# ---------------------------------------------------------------------------------------- set-ups


def bird_protocol_state(bird, name: str) -> str:
    return bird.protocols().get(name, {}).get("info", "")


def agent_status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def agent_established(run_dir: Path, peers: int = 1) -> bool:
    st = agent_status(run_dir)
    up = [p for p in st.get("peers", []) if p["state"] == "established"]
    return bool(st.get("in_sync")) and len(up) >= peers


def write_agent_config(path: Path, *, name: str, address: str, asn: int, peers: list[dict],
                       pod_cidrs: list[str], store: Path, run_dir: Path, import_allow: list[str] = (),
                       mesh: bool = False, eor_timeout: float = 2.0, resync_interval: float = 30.0,
                       hold_time: int = 90, graceful_restart: int = 120) -> Path:
    cfg = {
        "node": {"name": name, "address": address, "asn": asn, "router_id": address.split("/")[0]},
        "bgp": {"node_to_node_mesh": mesh, "hold_time": hold_time, "graceful_restart": graceful_restart,
                "import_allow": list(import_allow)},
        "peers": peers,
        "pod_cidrs": pod_cidrs,
        "routing": {"eor_timeout": eor_timeout, "resync_interval": resync_interval},
        "datastore": {"type": "local", "path": str(store)},
        "http": {"listen": ""},
        "run_dir": str(run_dir),
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@dataclass
class Cleanup:
    """Handles and namespaces to stop/delete in reverse order, even after a failure."""

    handles: list = field(default_factory=list)
    namespaces: list[Netns] = field(default_factory=list)

    def ns(self, name: str) -> Netns:
        ns = Netns.create(name)
        self.namespaces.append(ns)
        return ns

    def keep(self, handle):
        self.handles.append(handle)
        return handle

    def close(self) -> None:
        for h in reversed(self.handles):
            try:
                h.stop()
            except Exception:  # noqa: BLE001 - keep cleaning up
                pass
        for ns in reversed(self.namespaces):
            ns.delete()


def wait(pred, timeout: float, what: str, interval: float = 0.1):
    return wait_for(pred, timeout=timeout, interval=interval, what=what)
