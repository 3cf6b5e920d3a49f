"""Drivers that run FRR, BIRD 2 and the bgpnet agent inside a network namespace (for the lab and tests).

Each `start_*` writes the config into `run_dir`, checks it with the daemon's own parser first (a bad
config is a clear error, not a half-started router), starts the daemons in the foreground with their
output in `run_dir/<daemon>.log`, waits until their control socket answers, and returns a handle.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bgpnet.errors import BgpnetError
from bgpnet.lab.netns import Netns, sh, wait_for
from bgpnet.lab.procs import Proc, tail

log = logging.getLogger(__name__)

FRR_SBIN = "/usr/lib/frr"
FRR_USER = "frr"


class LabError(BgpnetError):
    """The lab or one of its routers could not be brought up (the message says which and why)."""


def _spawn(ns: Netns, name: str, argv: Sequence[str], log_path: Path, env: dict | None,
           cwd: Path | None = None) -> tuple[Proc, object]:
    with open(log_path, "ab") as out:
        p = ns.popen([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                     env={**os.environ, **env} if env else None, cwd=cwd)
    return Proc.of(name, p.pid, str(log_path)), p


def _wait_ready(proc: Proc, ready, what: str, timeout: float) -> None:
    """Poll `ready()` until true; fail fast with the log tail if the process died meanwhile."""
    def check():
        if not proc.alive():
            raise LabError(f"{what} exited during start-up; last lines of {proc.log}:\n{tail(proc.log)}")
        return ready()
    try:
        wait_for(check, timeout=timeout, interval=0.1, what=what)
    except TimeoutError as e:
        state = "exited" if not proc.alive() else f"not ready after {timeout:.0f}s"
        msg = f"{what}: {state}; last lines of {proc.log}:\n"
        raise LabError(msg + tail(proc.log)) from e


def _stop_all(procs: list[Proc], popens: list) -> None:
    for proc in reversed(procs):
        proc.stop()
    for p in popens:
        try:
            p.wait(timeout=0)
        except (subprocess.TimeoutExpired, ChildProcessError):
            pass


def _check_frr_can_reach(run_dir: Path) -> None:
    """FRR drops to user frr: every parent of run_dir must be searchable by others (pytest's tmp is not)."""
    for parent in run_dir.resolve().parents:
        st = parent.stat()
        if not st.st_mode & stat.S_IXOTH:
            raise LabError(f"FRR runs as user {FRR_USER} and cannot enter {parent} (mode "
                           f"{stat.filemode(st.st_mode)}); use a run directory under /run or chmod o+x it")


# ---------------------------------------------------------------------------------------------- FRR


@dataclass
class DaemonHandle:
    """Daemons started in a node's namespace: their PIDs, whether all still run, and stopping them."""

    ns: Netns
    run_dir: Path
    procs: list[Proc]
    _popens: list = field(default_factory=list, repr=False)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> bool:
        return all(p.alive() for p in self.procs)

    def spawn(self, name: str, argv: Sequence[str], env: dict | None) -> Proc:
        """Start `argv` in the handle's namespace, logging to RUN_DIR/NAME.log, and keep track of it."""
        proc, popen = _spawn(self.ns, name, argv, self.run_dir / f"{name}.log", env)
        self.procs.append(proc)
        self._popens.append(popen)
        return proc

    def stop(self) -> None:
        _stop_all(self.procs, self._popens)


@dataclass
class FrrHandle(DaemonHandle):
    def vtysh(self, *cmds: str, check: bool = True) -> str:
        """Run vtysh commands (several -c in one call) against this router; returns the output."""
        argv = ["vtysh", "--vty_socket", str(self.run_dir)]
        for c in cmds:
            argv += ["-c", c]
        return self.ns.run(*argv, check=check, timeout=30)

    def vtysh_json(self, cmd: str):
        return json.loads(self.vtysh(cmd))


def frr_vtysh(ns: Netns, run_dir: str | Path, cmd: str, check: bool = True) -> str:
    """vtysh against a router started earlier (e.g. by another process), found by its run directory."""
    return ns.run("vtysh", "--vty_socket", str(run_dir), "-c", cmd, check=check, timeout=30)


def start_frr(ns: Netns, conf_text: str, run_dir: str | Path, *, daemons: Sequence[str] = ("zebra", "bgpd"),
              env: dict | None = None, timeout: float = 30.0) -> FrrHandle:
    """Start FRR's zebra and bgpd in `ns` with `conf_text` as the integrated frr.conf; state in `run_dir`."""
    run_dir = Path(run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_frr_can_reach(run_dir)
    conf = run_dir / "frr.conf"
    conf.write_text(conf_text)
    check = subprocess.run(["vtysh", "--dryrun", "-f", str(conf)], capture_output=True, text=True)
    if check.returncode != 0:
        raise LabError(f"FRR rejects {conf}:\n{(check.stdout + check.stderr).strip()}")
    frr = pwd.getpwnam(FRR_USER)
    for path in (run_dir, conf):
        os.chown(path, frr.pw_uid, frr.pw_gid)
    conf.chmod(0o640)
    handle = FrrHandle(ns=ns, run_dir=run_dir, procs=[])
    try:
        for daemon in daemons:
            argv = [f"{FRR_SBIN}/{daemon}", "-u", FRR_USER, "-g", FRR_USER, "-f", conf,
                    "-i", run_dir / f"{daemon}.pid", "-z", run_dir / "zserv.api", "--vty_socket", run_dir]
            proc = handle.spawn(daemon, argv, env)
            sock = run_dir / f"{daemon}.vty"
            _wait_ready(proc, sock.exists, f"FRR {daemon} in {ns.name}", timeout)
        _wait_ready(handle.procs[-1], lambda: handle.vtysh("show version", check=False).strip(),
                    f"FRR vtysh in {ns.name}", timeout)
    except BaseException:
        handle.stop()
        raise
    log.info("FRR up in %s (pids %s)", ns.name, handle.pids)
    return handle


# ---------------------------------------------------------------------------------------------- BIRD


@dataclass
class BirdHandle(DaemonHandle):
    @property
    def socket(self) -> Path:
        return self.run_dir / "bird.ctl"

    def birdc(self, cmd: str, check: bool = True) -> str:
        return bird_birdc(self.ns, self.socket, cmd, check=check)

    def protocols(self) -> dict[str, dict[str, str]]:
        """`show protocols` as {name: {proto, table, state, since, info}}."""
        return parse_bird_protocols(self.birdc("show protocols"))


def bird_birdc(ns: Netns, socket: str | Path, cmd: str, check: bool = True) -> str:
    return ns.run("birdc", "-s", str(socket), *cmd.split(), check=check, timeout=30)


def parse_bird_protocols(text: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    lines = [line for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("BIRD ", "Name ")):
            continue
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        out[parts[0]] = {"proto": parts[1], "table": parts[2], "state": parts[3], "since": parts[4],
                         "info": parts[5].strip() if len(parts) > 5 else ""}
    return out


def start_bird(ns: Netns, conf_text: str, run_dir: str | Path, *, env: dict | None = None,
               timeout: float = 30.0) -> BirdHandle:
    """Start BIRD 2 in `ns` with `conf_text`; control socket, pid file and log in `run_dir`."""
    run_dir = Path(run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "bird.conf"
    conf.write_text(conf_text)
    check = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True)
    if check.returncode != 0:
        raise LabError(f"BIRD rejects {conf}:\n{(check.stdout + check.stderr).strip()}")
    handle = BirdHandle(ns=ns, run_dir=run_dir, procs=[])
    argv = ["bird", "-f", "-c", conf, "-s", handle.socket, "-P", run_dir / "bird.pid"]
    proc = handle.spawn("bird", argv, env)
    try:
        _wait_ready(proc, lambda: handle.socket.exists() and "ready" in handle.birdc("show status", check=False),
                    f"BIRD in {ns.name}", timeout)
    except BaseException:
        handle.stop()
        raise
    log.info("BIRD up in %s (pid %s)", ns.name, proc.pid)
    return handle


# ---------------------------------------------------------------------------------------------- bgpnet agent


@dataclass
class AgentHandle(DaemonHandle):
    pass


def package_root() -> str:
    """The directory holding the `bgpnet` package (what PYTHONPATH needs for `python -m bgpnet`)."""
    return str(Path(__file__).resolve().parent.parent.parent)


def start_agent(ns: Netns, config_path: str | Path, run_dir: str | Path, *, env: dict | None = None,
                extra_args: Sequence[str] = ()) -> AgentHandle:
    """Start `python -m bgpnet agent --config CONFIG --run-dir RUN_DIR` in `ns` with this interpreter."""
    run_dir = Path(run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    venv_bin = os.path.dirname(sys.executable)  # so the agent finds the `exabgp` next to this python
    path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    agent_env = {"PYTHONPATH": package_root(), "PATH": f"{venv_bin}:{path}", **(env or {})}
    argv = [sys.executable, "-m", "bgpnet", "agent", "--config", str(Path(config_path).absolute()),
            "--run-dir", str(run_dir), *extra_args]
    # cwd: `python -m` puts the working directory first on sys.path, before PYTHONPATH; a checkout there
    # would win over the package that `env` asks for (bench_e2e --compare runs another checkout's agent)
    proc, popen = _spawn(ns, "bgpnet-agent", argv, run_dir / "agent.log", agent_env, cwd=run_dir)
    log.info("bgpnet agent started in %s (pid %s)", ns.name, proc.pid)
    return AgentHandle(ns=ns, run_dir=run_dir, procs=[proc], _popens=[popen])


def routes(ns: Netns, proto: int | str = 201) -> list[str]:
    """Kernel routes with protocol `proto` in `ns` (201 = bgpnet's), one `ip route` line each."""
    out = sh(["ip", "-n", ns.name, "route", "show", "proto", str(proto)], check=False)
    return [line.strip() for line in out.splitlines() if line.strip()]
