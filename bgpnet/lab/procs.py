"""Processes the lab started, identified by PID plus kernel start time so a reused PID is never killed."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

from bgpnet.lab.netns import kill_pid

log = logging.getLogger(__name__)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces or parentheses: split after its closing ')'
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie has finished; only its parent's wait is missing
        return None
    return int(fields[19])


@dataclass
class Proc:
    """A daemon the lab runs: what it is, its PID, when it started, and where its output goes."""

    name: str
    pid: int
    started: int | None
    log: str = ""

    def alive(self) -> bool:
        now = start_time(self.pid)
        return now is not None and (self.started is None or now == self.started)

    def stop(self, timeout: float = 5.0) -> None:
        if self.alive():
            kill_pid(self.pid, timeout=timeout)
        else:
            try:  # reap it if it is our own zombie child; never signal a PID that may be reused
                os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pass

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Proc:
        return cls(name=d["name"], pid=int(d["pid"]), started=d.get("started"), log=d.get("log", ""))

    @classmethod
    def of(cls, name: str, pid: int, log_path: str = "") -> Proc:
        return cls(name=name, pid=pid, started=start_time(pid), log=log_path)


def tail(path: str, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return ""
