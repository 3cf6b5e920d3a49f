"""Supervise one ExaBGP process and bridge its JSON API (through the relay) to speaker events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import bgpnet
from bgpnet.errors import ConfigError
from bgpnet.speaker.messages import (
    ACKS,
    Event,
    MessageError,
    PeerDown,
    PeerUp,
    SpeakerShutdown,
    parse_message,
)
from bgpnet.speaker.render import (
    Neighbor,
    announce_command,
    check_route_attributes,
    eor_command,
    exabgp_env,
    relay_argv,
    render_exabgp_config,
    teardown_command,
    withdraw_command,
)

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.5  # seconds before the first restart of a crashed ExaBGP
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0  # an ExaBGP that ran this long resets the backoff
STOP_TIMEOUT = 10.0

# ExaBGP 5.0.15's log lines (reactor/loop.py) at the end of a SIGUSR1 reload
RELOAD_DONE = b"loaded new configuration successfully"
RELOAD_FAILED = b"could not load/reload configuration"

_MD5 = re.compile(r"(md5-password\s+)\S+")


def exabgp_executable() -> str:
    beside = Path(sys.executable).parent / "exabgp"
    if beside.exists():
        return str(beside)
    found = shutil.which("exabgp")
    if not found:
        raise FileNotFoundError("exabgp not found next to the Python interpreter nor on PATH")
    return found


def _mask(text: str) -> str:
    return _MD5.sub(r"\1***", text)


def _write_private(path: Path, text: str) -> None:
    """Atomically write a file only root can read (the config carries MD5 passwords)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Speaker:
    """Runs ExaBGP for a set of neighbours, keeps the desired exported routes announced to them, and
    reports what ExaBGP says as events through `on_event` (called on the event loop)."""

    def __init__(
        self,
        run_dir: Path,
        on_event: Callable[[Event], None],
        listen_address: IPv4Address | None,
        port: int = 179,
        name: str = "bgpnet",
    ):
        self.run_dir = Path(run_dir)
        self.on_event = on_event
        self.listen_address = listen_address
        self.port = port
        self.name = name
        self.config_path = self.run_dir / "exabgp.conf"
        self.socket_path = self.run_dir / "api.sock"
        self.log_path = self.run_dir / "exabgp.log"
        self.established: set[IPv4Address] = set()
        self.restarts = 0
        self._neighbors: dict[IPv4Address, Neighbor] = {}
        self._config_text = ""
        self._desired: dict[IPv4Network, dict] = {}
        # extra routes for single neighbours (paths a route reflector reflects); _desired wins on overlap
        self._peer_routes: dict[IPv4Address, dict[IPv4Network, dict]] = {}
        # a route reflector holds its End-of-RIB back until it has learned (and reflected) its peers'
        # routes, or graceful-restart clients would sweep the reflected routes they still hold
        self.hold_eor = False
        self._eor_pending: set[IPv4Address] = set()
        # what this ExaBGP process holds in its adj-rib-out per neighbour, as we told it; ExaBGP
        # re-advertises that on its own when a session comes back, so it must match what we want
        self._sent: dict[IPv4Address, dict[IPv4Network, dict]] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._supervisor: asyncio.Task | None = None
        self._stopping = False
        self._shutdown_reported = False
        self._recent: deque[str] = deque(maxlen=8)
        self.errors = 0  # "error" answers from ExaBGP to our commands
        self._unacked = 0  # commands ExaBGP has not answered yet
        self.malformed = 0

    # -- public API
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.returncode is None else None

    @property
    def neighbors(self) -> dict[IPv4Address, Neighbor]:
        return dict(self._neighbors)

    async def start(self, neighbors: Sequence[Neighbor]) -> None:
        """Write the config, serve the relay's socket, launch ExaBGP (and keep it running)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket_path).encode()) > 107:
            raise ConfigError(f"unix socket path longer than 107 bytes: {self.socket_path}", "run_dir")
        text = self._render(neighbors)
        await self._validate(text)
        await self._kill_stale()
        _write_private(self.config_path, text)
        self._config_text = text
        self._neighbors = {n.address: n for n in neighbors}
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._serve_relay, path=str(self.socket_path))
        os.chmod(self.socket_path, 0o600)
        self._stopping = False
        await self._launch()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.name}-exabgp")

    async def set_neighbors(self, neighbors: Sequence[Neighbor]) -> bool:
        """Apply a new neighbour set by reloading ExaBGP in place (SIGUSR1). Neighbours whose block did
        not change keep their sessions; changed ones are torn down and come back. Returns whether
        anything changed. A config ExaBGP rejects raises ConfigError and changes nothing."""
        text = self._render(neighbors)
        if text == self._config_text:
            return False
        await self._validate(text)
        _write_private(self.config_path, text)
        self._config_text = text
        old = self._neighbors
        self._neighbors = {n.address: n for n in neighbors}
        for peer in set(old) - set(self._neighbors):
            self._sent.pop(peer, None)
            self.established.discard(peer)
        log.info(
            "reloading ExaBGP: %d neighbours (added %s, removed %s)",
            len(self._neighbors),
            sorted(map(str, set(self._neighbors) - set(old))) or "none",
            sorted(map(str, set(old) - set(self._neighbors))) or "none",
        )
        if self.pid:
            await self._reload()
        return True

    async def _reload(self, timeout: float = 20.0) -> None:
        """SIGUSR1, then wait for ExaBGP's log to say the reload is done, so callers act on the new set.

        ExaBGP drops a reload signal that arrives while updates are still queued for a peer, so an
        unconfirmed reload is signalled again (after 1 s, 2 s, 4 s ...) until `timeout`.
        """
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        deadline = time.monotonic() + timeout
        retry = 1.0
        while time.monotonic() < deadline and self.pid:
            os.kill(self.pid, signal.SIGUSR1)
            resend_at = min(time.monotonic() + retry, deadline)
            while time.monotonic() < resend_at:
                with open(self.log_path, "rb") as f:
                    f.seek(offset)
                    tail = f.read()
                if RELOAD_DONE in tail:
                    log.info("ExaBGP reloaded its configuration")
                    return
                if RELOAD_FAILED in tail:
                    log.error("ExaBGP could not reload its configuration; see %s", self.log_path)
                    return
                await asyncio.sleep(0.05)
            retry = min(retry * 2, 8.0)
        log.warning("ExaBGP did not confirm the reload within %.0fs; see %s", timeout, self.log_path)

    def set_announcements(self, prefixes: dict[IPv4Network, dict]) -> None:
        """Desired exported routes (prefix -> attributes such as {'communities': ['65000:1']}).
        Only the difference is sent, to every configured neighbour (ExaBGP keeps each neighbour's
        adj-rib-out across session flaps, so a withdrawal must reach it even while a session is down)."""
        desired = {}
        for prefix, attrs in prefixes.items():
            prefix = IPv4Network(prefix)
            attrs = dict(attrs or {})
            check_route_attributes(attrs, f"route {prefix}")
            desired[prefix] = attrs
        self._desired = desired
        self._sync_all()

    def set_peer_routes(self, routes: dict[IPv4Address, dict[IPv4Network, dict]]) -> None:
        """Desired routes for single neighbours on top of `set_announcements` (e.g. reflected paths, with
        attributes such as next_hop, as_path, originator_id, cluster_list). Only the difference is sent."""
        checked: dict[IPv4Address, dict[IPv4Network, dict]] = {}
        for peer, prefixes in routes.items():
            out = checked.setdefault(IPv4Address(peer), {})
            for prefix, attrs in prefixes.items():
                prefix = IPv4Network(prefix)
                attrs = dict(attrs or {})
                check_route_attributes(attrs, f"route {prefix} to {peer}")
                out[prefix] = attrs
        checked = {p: r for p, r in checked.items() if r}
        if checked == self._peer_routes:
            return
        changed = set(checked) | set(self._peer_routes)
        self._peer_routes = checked
        for peer in sorted(changed & set(self._neighbors)):
            self._sync_peer(peer)

    def desired_for(self, peer: IPv4Address) -> dict[IPv4Network, dict]:
        """Everything `peer` should have from us: its own extra routes, then our announcements."""
        merged = dict(self._peer_routes.get(peer, {}))
        merged.update(self._desired)
        return merged

    async def stop(self, graceful: bool = True) -> None:
        """Stop ExaBGP. graceful=True: SIGTERM only; ExaBGP then closes sessions without NOTIFICATION,
        so graceful-restart peers keep our routes while we restart. graceful=False: withdraw our routes
        and send a Cease NOTIFICATION to each established peer first (silent if GR was negotiated)."""
        self._stopping = True
        if not graceful and self._writer:
            self._desired = {}
            self._peer_routes = {}
            self._sync_all()
            # ExaBGP acts on a teardown before it flushes queued updates: let it take the withdrawals
            # first (an ack means the command is in its adj-rib-out), then give the peers the Cease
            await self._wait(lambda: self._unacked == 0, 3.0)
            for peer in sorted(self.established):
                self._send(teardown_command(peer))
            await self._wait(lambda: not self.established, 3.0)
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._terminate()
        if self._server:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        self._writer = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._lost_exabgp()

    # -- process supervision
    def _render(self, neighbors: Sequence[Neighbor]) -> str:
        root = Path(bgpnet.__file__).resolve().parent.parent
        return render_exabgp_config(neighbors, relay_argv(sys.executable, root, self.socket_path))

    async def _validate(self, text: str) -> None:
        """Let ExaBGP itself parse the config before it is applied."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        candidate = self.run_dir / "exabgp.conf.candidate"
        _write_private(candidate, text)
        try:
            proc = await asyncio.create_subprocess_exec(
                exabgp_executable(), "validate", "-n", str(candidate),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **exabgp_env(self.listen_address, self.port, self.run_dir)},
            )
            out, _ = await proc.communicate()
        finally:
            candidate.unlink(missing_ok=True)
        if proc.returncode != 0:
            detail = [line.strip() for line in out.decode(errors="replace").splitlines() if line.strip()]
            raise ConfigError("ExaBGP rejected the rendered config: " + _mask(" | ".join(detail[-4:])), str(self.config_path))

    async def _kill_stale(self) -> None:
        """An ExaBGP left running by a previous agent (killed -9) would hold the BGP port and connect its
        relay to our new socket: stop it first. Only a process running our own config file is touched."""
        pid_file = self.run_dir / "exabgp.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return
        if str(self.config_path).encode() not in cmdline:
            return
        log.warning("stopping ExaBGP pid %d left over from a previous run", pid)
        os.kill(pid, signal.SIGTERM)
        await self._wait(lambda: not Path(f"/proc/{pid}").exists(), STOP_TIMEOUT)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)

    async def _launch(self) -> None:
        env = {**os.environ, **exabgp_env(self.listen_address, self.port, self.run_dir)}
        self._sent = {}
        self._shutdown_reported = False
        if self.log_path.exists():  # keep the previous run's log for post-mortems, not every run's
            os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
        logf = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self._proc = await asyncio.create_subprocess_exec(
                exabgp_executable(), "server", str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
                start_new_session=True,  # a Ctrl-C to the agent must not kill ExaBGP before we stop it
            )
        finally:
            logf.close()
        self._started_at = time.monotonic()
        log.info("started ExaBGP pid %d (%d neighbours, log %s)", self._proc.pid, len(self._neighbors), self.log_path)

    async def _supervise(self) -> None:
        failures = 0
        while True:
            ran = 0.0
            if self._proc is not None:
                rc = await self._proc.wait()
                if self._stopping:
                    return
                ran = time.monotonic() - self._started_at
                log.warning("ExaBGP pid %d exited with %s after %.1fs; see %s", self._proc.pid, rc, ran, self.log_path)
                self._lost_exabgp()
            failures = 1 if ran >= STABLE_AFTER else failures + 1
            await asyncio.sleep(min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (failures - 1)))
            self.restarts += 1
            try:
                await self._launch()
            except OSError as e:  # e.g. the executable vanished: retry after the backoff, never spin
                log.error("cannot start ExaBGP: %s", e)
                self._proc = None

    async def _terminate(self) -> None:
        proc = self._proc
        if not proc or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("ExaBGP pid %d ignored SIGTERM for %.0fs; killing it", proc.pid, STOP_TIMEOUT)
            proc.kill()
            await proc.wait()
        log.info("ExaBGP pid %d stopped (exit %s)", proc.pid, proc.returncode)

    def _lost_exabgp(self) -> None:
        """ExaBGP is gone: its sessions are gone with it, and its adj-rib-out too."""
        self.established.clear()
        self._sent = {}
        if not self._shutdown_reported:
            self._shutdown_reported = True
            self._emit(SpeakerShutdown())

    @staticmethod
    async def _wait(pred: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not pred() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # -- the relay connection
    async def _serve_relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:
            log.warning("a second relay connected; the newer one replaces the older")
            self._writer.close()
        self._relay_connected(writer)
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    break
                except asyncio.LimitOverrunError as e:
                    # one huge line; drop it rather than die
                    await reader.readexactly(e.consumed)
                    log.error("ExaBGP line longer than %d bytes skipped", e.consumed)
                    continue
                self._on_line(raw.decode(errors="replace"))
        except ConnectionError:
            pass
        finally:
            if self._writer is writer:
                self._writer = None
                log.info("ExaBGP API relay disconnected")
            writer.close()

    def _relay_connected(self, writer) -> None:
        self._writer = writer
        self._unacked = 0
        log.info("ExaBGP API relay connected")
        # a fresh ExaBGP has an empty adj-rib-out; a respawned relay may have missed commands: what we
        # believe was sent becomes unknown, so everything desired is announced again
        for sent in self._sent.values():
            sent.update(dict.fromkeys(sent))
        self._sync_all()

    def _on_line(self, line: str) -> None:
        text = line.strip()
        if text in ACKS:
            self._unacked = max(0, self._unacked - 1)
            if text == "error":
                self.errors += 1
                log.warning("ExaBGP refused a command; recent commands: %s", list(self._recent))
            return
        try:
            events = parse_message(text)
        except MessageError as e:
            self.malformed += 1
            log.error("skipping malformed ExaBGP line (%s): %s", e, text[:300])
            return
        for event in events:
            self._handle(event)

    def _handle(self, event: Event) -> None:
        if isinstance(event, PeerUp):
            if event.peer not in self._neighbors:
                log.warning("session up with unknown peer %s; ignored", event.peer)
                return
            self.established.add(event.peer)
            desired = self.desired_for(event.peer)
            log.info("peer %s AS%d established; announcing %d prefixes", event.peer, event.peer_asn, len(desired))
            # ExaBGP re-sends its adj-rib-out itself; announcing everything again is harmless (implicit
            # replace) and covers a reload that rebuilt the neighbour. Our EOR goes last (manual-eor), so
            # a graceful-restart peer only sweeps our old routes once the full set is there.
            sent = self._sent.setdefault(event.peer, {})
            sent.update(dict.fromkeys(sent))
            sent.update(dict.fromkeys(desired))
            self._sync_peer(event.peer)
            if self.hold_eor:
                self._eor_pending.add(event.peer)
            else:
                self._send(eor_command(event.peer))
        elif isinstance(event, PeerDown):
            self.established.discard(event.peer)
            self._eor_pending.discard(event.peer)
            log.info("peer %s down: %s%s", event.peer, event.reason, " (notification)" if event.notification else "")
        elif isinstance(event, SpeakerShutdown):
            if self._shutdown_reported:
                return
            self._shutdown_reported = True
            self.established.clear()
        self._emit(event)

    def _emit(self, event: Event) -> None:
        try:
            self.on_event(event)
        except Exception:  # the agent's bug must not take the BGP bridge down with it
            log.exception("on_event handler failed for %r", event)

    # -- keeping ExaBGP's adj-rib-out equal to the desired routes
    def _sync_all(self) -> None:
        for peer in sorted(self._neighbors):
            self._sync_peer(peer)

    def _sync_peer(self, peer: IPv4Address) -> None:
        if self._writer is None:
            return  # nothing to tell; the next relay connection resyncs everything
        sent = self._sent.setdefault(peer, {})
        desired = self.desired_for(peer)
        for prefix in sorted(set(sent) - set(desired)):
            if not self._send(withdraw_command(peer, prefix)):
                return
            del sent[prefix]
            log.info("withdrew %s from peer %s", prefix, peer)
        for prefix, attrs in sorted(desired.items()):
            if prefix not in sent or sent[prefix] != attrs:
                if not self._send(announce_command(peer, prefix, attrs)):
                    return
                sent[prefix] = attrs
                log.info("announced %s to peer %s", prefix, peer)

    def _send(self, command: str) -> bool:
        if self._writer is None or self._writer.is_closing():
            log.debug("no relay; not sent: %s", command)
            return False
        self._recent.append(command)
        self._unacked += 1
        self._writer.write(command.encode() + b"\n")
        return True

    # -- used by the agent
    def render(self, neighbors: Sequence[Neighbor]) -> str:
        """The ExaBGP config this speaker would run for `neighbors` (for `bgpnet render exabgp`)."""
        return self._render(neighbors)

    def release_eor(self) -> None:
        """Stop holding End-of-RIB back; send it to the peers that came up meanwhile (after the routes
        announced so far, which ExaBGP sends in order)."""
        self.hold_eor = False
        pending, self._eor_pending = self._eor_pending, set()
        for peer in sorted(pending & self.established):
            self._send(eor_command(peer))

    def teardown(self, peer: IPv4Address, reason: str) -> None:
        """Close the session with a Cease NOTIFICATION, subcode 1: maximum number of prefixes reached."""
        log.warning("tearing down the session with %s: %s", peer, reason)
        self._send(teardown_command(peer, 1))
