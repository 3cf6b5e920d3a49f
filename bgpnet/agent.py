"""The node agent: one reconcile loop wiring datastore -> speaker -> kernel routes -> policy.

Inputs (datastore objects, BGP events, timers) only mark state dirty; one task recomputes the desired
routes from cached inputs and applies the difference. Nothing is written to the kernel before the
inputs are in sync (end-of-RIB from every peer, or `routing.eor_timeout`), so a restart does not flap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import time
from ipaddress import IPv4Address, IPv4Network
from itertools import repeat
from pathlib import Path

from bgpnet.config import AgentConfig, PeerConfig, load_config, resolve
from bgpnet.datastore import base as kinds
from bgpnet.datastore.base import Datastore
from bgpnet.errors import BgpnetError, ConfigError
from bgpnet.filters import ImportRules, select_imports
from bgpnet.ipip.dataplane import pools_from_objects
from bgpnet.peering import (
    all_peers,
    desired_neighbors,
    effective_config,
    export_attributes,
    import_rules,
    md5_failures,
    node_infos,
    node_record,
    own_prefixes,
    read_passwords,
    reflected_routes,
    session_hint,
)

log = logging.getLogger(__name__)

# status.json lists every route (~50 ms to write at 10k): during a burst of BGP updates it waits until the
# routes have been quiet this long (seconds), unless it is older than STATUS_MAX_AGE
STATUS_QUIET = 0.25
STATUS_MAX_AGE = 5.0
MERGE_DELAY = 0.005  # seconds: the first update of a burst waits this long for more before an apply
# Datastore kinds whose changes alter peering or announcements.
PEERING_KINDS = (kinds.NODE, kinds.IPAM_BLOCK, kinds.BLOCK_AFFINITY, kinds.IP_POOL, kinds.BGP_PEER,
                 kinds.BGP_CONFIGURATION)
POLICY_KINDS = (kinds.POD, kinds.NAMESPACE, kinds.NETWORK_POLICY)


class Dirty(asyncio.Event):
    """Something changed and routes need an apply. `set()`: recompute everything; `add(prefixes)`: only
    these prefixes' best paths changed (BGP updates), so only their routes need planning and writing."""

    def __init__(self):
        super().__init__()
        self.prefixes: set | None = None  # None: a full apply

    def set(self) -> None:
        self.prefixes = None
        super().set()

    def add(self, prefixes) -> None:
        if not self.is_set():
            self.prefixes = set(prefixes)
            super().set()
        elif self.prefixes is not None:
            self.prefixes |= prefixes

    def take(self) -> set | None:
        """Clear the flag; the changed prefixes, or None for a full apply."""
        prefixes, self.prefixes = self.prefixes, None
        self.clear()
        return prefixes


@dataclasses.dataclass
class PeerStatus:
    address: str
    name: str
    asn: int
    state: str = "idle"
    since: float = dataclasses.field(default_factory=time.time)
    last_error: str = ""
    eor: bool = False
    ever_up: bool = False


class Agent:
    """Runs inside the node's network namespace; owns one ExaBGP speaker and the node's kernel routes."""

    def __init__(self, cfg: AgentConfig, store: Datastore, route_table=None, policy=None):
        self.cfg = cfg
        self.file_cfg = cfg  # as read from the file; self.cfg adds the datastore's BGPConfiguration
        self.store = store
        self.run_dir = Path(cfg.run_dir)
        self.route_table = route_table
        self.policy = policy
        self.neighbors: list = []
        self.prefixes: list[IPv4Network] = []
        self.peer_status: dict[IPv4Address, PeerStatus] = {}
        self.stale_deadline: dict[IPv4Address | None, float] = {}
        self.route_writes = {"add": 0, "remove": 0}
        self.route_write_errors = 0
        self._http = None
        self.last_apply = ""
        self.apply_errors: list[str] = []
        self._dirty = Dirty()
        self._status_at = 0.0
        self._status_due = False
        self._routes_changed_at = 0.0
        self._installed_by_dst: dict = {}  # destination -> Route as last written
        self._refresh_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._synced = False
        self._full_resync = True
        self.pools: list = []
        self.tunnel_address: IPv4Address | None = None
        self.pod_mtu: int | None = None
        self.underlay_mtu = 1500
        self.dataplane = None
        self._restarting = False
        self._sync_deadline = 0.0
        self._store_rev: dict[str, str] = {}
        self._peers_rev = ""
        self.speaker = None
        self.rib = None
        self.rules = ImportRules()
        self.peer_configs: dict[IPv4Address, PeerConfig] = {}
        self.exports: dict[IPv4Network, dict] = {}  # our prefixes with their attributes (communities)
        self.router_ids: dict[IPv4Address, IPv4Address] = {}  # node address -> router id (for reflection)
        self.reflected: dict[IPv4Address, dict] = {}
        # peers torn down for too many prefixes: (loop time they may come back, why); left out of ExaBGP
        self.held_down: dict[IPv4Address, tuple[float, str]] = {}
        self.adj_in: dict[IPv4Address, dict[IPv4Network, object]] = {}  # as received, before import policy
        self.accepted: dict[IPv4Address, dict[IPv4Network, object]] = {}
        self.rejected: dict[IPv4Address, dict[IPv4Network, str]] = {}

    @property
    def installed(self) -> set:
        return set(self._installed_by_dst.values())

    # -- lifecycle --------------------------------------------------------------------------------

    async def run(self) -> None:
        from bgpnet.ipip.dataplane import Dataplane, underlay_mtu
        from bgpnet.ipip.kernel import RouteTable
        from bgpnet.speaker.rib import Rib
        from bgpnet.speaker.speaker import Speaker

        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "agent.pid").write_text(f"{os.getpid()}\n")
        self._enable_forwarding()
        if self.route_table is None:
            self.route_table = RouteTable()
        self.dataplane = Dataplane(self.route_table)
        self.underlay_mtu = await asyncio.to_thread(underlay_mtu, self.cfg.node.address)
        self.rib = Rib()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGUSR2, lambda: self.stop(restart=True))
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))

        await asyncio.to_thread(self._seed_pools)
        # an IPIP pool on a kernel without IPIP: stop before the node record and the tunnel address exist
        self.dataplane.check_pools(pools_from_objects(await asyncio.to_thread(self.store.list, kinds.IP_POOL)))
        await asyncio.to_thread(self.store.put, kinds.NODE, self.cfg.node.name, node_record(self.cfg))
        self._passwords = read_passwords(self.cfg)
        await self._refresh_from_store(force=True)
        self.dataplane.check(self.desired_plan())  # e.g. an IPIP pool on a kernel without IPIP: stop now

        self._events: asyncio.Queue = asyncio.Queue()
        self.speaker = Speaker(self.run_dir, self._events.put_nowait, listen_address=self.cfg.node.address.ip,
                               port=self.cfg.bgp.port, name=self.cfg.node.name)
        self._sync_deadline = loop.time() + self.cfg.routing.eor_timeout
        self.speaker.set_announcements(self.exports)
        self.speaker.hold_eor = self.cfg.bgp.route_reflector_cluster_id is not None
        await self.speaker.start(self.neighbors)
        log.info("node %s (%s, AS %d) started: %d neighbours, announcing %s", self.cfg.node.name,
                 self.cfg.node.address, self.cfg.node.asn, len(self.neighbors),
                 ", ".join(map(str, self.prefixes)) or "nothing")
        if self.cfg.http.address():
            from bgpnet.http import serve

            try:
                self._http = serve(self, *self.cfg.http.address())
            except OSError as e:
                log.error("health/metrics endpoint %s not started: %s", self.cfg.http.listen, e)
        tasks = [asyncio.create_task(c) for c in (
            self._event_loop(), self._reconcile_loop(), self._store_loop(), self._timer_loop())]
        self._write_status()
        await self._stop.wait()
        if self._restarting:
            log.info("stopping for a restart: sessions close without withdrawing, so graceful-restart peers "
                     "keep our routes for %ds; kernel routes stay in place", self.cfg.bgp.graceful_restart)
        else:
            log.info("stopping: withdrawing our routes from every peer; kernel routes stay until the next start")
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.speaker.stop(graceful=self._restarting)
        if self._http is not None:
            self._http.shutdown()
        self._write_status(state="stopped")

    def stop(self, restart: bool = False) -> None:
        """SIGTERM: leave (peers drop our routes now). SIGUSR2: restart (peers keep them for the GR time)."""
        self._restarting = restart
        self._stop.set()

    async def reload(self) -> None:
        """SIGHUP: re-read the config file; on any error keep running with the old config."""
        if not self.cfg.source:
            return
        try:
            new = resolve(load_config(self.cfg.source))
            new = dataclasses.replace(new, run_dir=self.cfg.run_dir)
            passwords = read_passwords(new)
        except BgpnetError as e:
            log.error("reload rejected, keeping the running config: %s", e)
            return
        if (dataclasses.replace(new.node, labels={}) != dataclasses.replace(self.cfg.node, labels={})
                or new.bgp.port != self.cfg.bgp.port):
            log.error("reload rejected: node identity/address/port changes need a restart")
            return
        old, old_passwords, old_file = self.cfg, self._passwords, self.file_cfg
        self.cfg, self._passwords, self.file_cfg = new, passwords, new
        held, self.held_down = self.held_down, {}  # the operator acted: max-prefixes hold-downs end
        try:
            await self._refresh_from_store(force=True)
        except BgpnetError as e:
            log.error("reload rejected, keeping the running config: %s", e)
            self.cfg, self._passwords, self.held_down, self.file_cfg = old, old_passwords, held, old_file
            await self._refresh_from_store(force=True)
            return
        if node_record(new) != node_record(old):  # labels or route reflector role: the others re-peer
            await asyncio.to_thread(self.store.put, kinds.NODE, new.node.name, node_record(new, self.pod_mtu))
        log.info("config reloaded from %s", self.cfg.source)

    def _enable_forwarding(self) -> None:
        try:
            Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        except OSError as e:
            log.warning("cannot enable IPv4 forwarding: %s", e)

    # -- inputs -----------------------------------------------------------------------------------

    async def _refresh_from_store(self, force: bool = False) -> None:
        # one refresh at a time: the store loop, reload and a max-prefixes teardown may overlap
        async with self._refresh_lock:
            await self._refresh(force)

    async def _refresh(self, force: bool) -> None:
        rev = await asyncio.to_thread(self.store.revision, PEERING_KINDS)
        if not force and rev == self._peers_rev:
            return
        self._peers_rev = rev

        def read():
            out = {k: self.store.list(k) for k in (kinds.NODE, kinds.BGP_PEER, kinds.IP_POOL, kinds.IPAM_BLOCK)}
            out[kinds.BGP_CONFIGURATION] = self.store.get(kinds.BGP_CONFIGURATION, "default")
            return out

        objs = await asyncio.to_thread(read)
        self.cfg = effective_config(self.file_cfg, objs[kinds.BGP_CONFIGURATION])
        prefixes = await asyncio.to_thread(own_prefixes, self.cfg, self.store)
        peers = all_peers(self.cfg, objs[kinds.BGP_PEER])
        try:
            passwords = read_passwords(self.cfg, peers)
        except ConfigError as e:
            log.error("peers not updated: %s", e)
            return
        sources: dict[IPv4Address, PeerConfig] = {}
        neighbors = desired_neighbors(self.cfg, objs[kinds.NODE], passwords, peers, sources)
        neighbors = [n for n in neighbors if n.address not in self.held_down]
        self.router_ids = {i.address: i.router_id for i in node_infos(objs[kinds.NODE], self.cfg.node.name)}
        self.pools = pools_from_objects(objs[kinds.IP_POOL])
        if self.tunnel_address is None and any(p.encapsulation != "none" and p.mode != "Never" for p in self.pools):
            self.tunnel_address = await asyncio.to_thread(self._reserve_tunnel_address)
            if self.tunnel_address is not None:
                prefixes = await asyncio.to_thread(own_prefixes, self.cfg, self.store)
        changed_configs = {a for a in set(sources) | set(self.peer_configs)
                           if sources.get(a) != self.peer_configs.get(a)}
        self.peer_configs = sources
        if neighbors != self.neighbors:
            added = {n.address for n in neighbors} - {n.address for n in self.neighbors}
            removed = {n.address for n in self.neighbors} - {n.address for n in neighbors}
            old_neighbors, old_status = self.neighbors, dict(self.peer_status)
            # status entries exist before ExaBGP reloads: sessions may come up while it does
            self.neighbors = neighbors
            for n in neighbors:
                self.peer_status.setdefault(n.address, PeerStatus(str(n.address), n.name, n.peer_asn))
            if self.speaker is not None:
                self._write_status()
                try:
                    await self.speaker.set_neighbors(neighbors)
                except BgpnetError:  # ExaBGP refused the new set: nothing changes
                    self.neighbors, self.peer_status = old_neighbors, old_status
                    raise
            for a in removed:
                self.peer_status.pop(a, None)
                self._forget_peer(a, drop=True)
            if added or removed:
                log.info("neighbours: +%s -%s", sorted(map(str, added)), sorted(map(str, removed)))
        exports = export_attributes(prefixes, objs[kinds.IP_POOL])
        if prefixes != self.prefixes or exports != self.exports:
            log.info("announcing %s", ", ".join(map(str, prefixes)) or "nothing")
            self.prefixes, self.exports = prefixes, exports
            if self.speaker is not None:
                self.speaker.set_announcements(exports)
        rules = import_rules(self.cfg, prefixes, objs[kinds.NODE], objs[kinds.IP_POOL], objs[kinds.IPAM_BLOCK])
        if rules != self.rules:
            self.rules = rules
            changed_configs = set(self.adj_in)
        for peer in sorted(changed_configs & set(self.adj_in)):  # e.g. a reloaded max_prefixes
            self._import(peer)
        self._dirty.set()

    async def _publish_pod_mtu(self, plan) -> None:
        """Pods get the smallest MTU of the paths they may take: a tunnel's, or the underlay's."""
        mtus = [d.mtu for d in (plan.tunnels.ipip, plan.tunnels.vxlan) if d is not None]
        mtu = min(mtus, default=self.underlay_mtu)
        if mtu != self.pod_mtu:
            self.pod_mtu = mtu
            await asyncio.to_thread(self.store.put, kinds.NODE, self.file_cfg.node.name,
                                    node_record(self.file_cfg, mtu))
            log.info("pod MTU %d published for the CNI plugin", mtu)

    def _seed_pools(self) -> None:
        """Create the config file's pools that the datastore does not have yet (Calico's default pool)."""
        from bgpnet.ipam import add_pool

        for pool in self.cfg.pools:
            if self.store.get(kinds.IP_POOL, pool.name) is not None:
                continue
            try:
                add_pool(self.store, pool.name, pool.spec())
            except BgpnetError as e:  # e.g. another node created it a moment ago, or it overlaps one
                if self.store.get(kinds.IP_POOL, pool.name) is None:
                    log.error("pool %s from %s not created: %s", pool.name, self.cfg.source, e)

    def _reserve_tunnel_address(self) -> IPv4Address | None:
        """The tunnel device's address, taken from IPAM like a pod's so no pod is ever given it."""
        from bgpnet.ipam import auto_assign

        try:
            return auto_assign(self.store, self.cfg.node.name, f"tunnel-{self.cfg.node.name}")
        except BgpnetError as e:
            log.warning("no tunnel address from IPAM (%s): using the first address of the node's prefix", e)
            return None

    def _forget_peer(self, peer: IPv4Address, drop: bool) -> None:
        """Clear what we received from `peer`; with `drop`, its routes go from the RIB too."""
        self.adj_in.pop(peer, None)
        self.accepted.pop(peer, None)
        self.rejected.pop(peer, None)
        if drop and self.rib is not None:
            self.rib.drop_peer(peer)

    def _import(self, peer: IPv4Address) -> None:
        """Run the import policy over everything `peer` sent and hand the RIB only the difference."""
        from bgpnet.speaker.messages import Update

        pc = self.peer_configs.get(peer)
        rules = self.rules
        if pc is not None and pc.accept_default:
            rules = dataclasses.replace(rules, accept_default=True)
        accepted, rejected, over = select_imports(self.adj_in.get(peer, {}).values(), rules,
                                                  pc.max_prefixes if pc else 0, self.cfg.node.asn,
                                                  self.cfg.node.router_id, self.cfg.bgp.route_reflector_cluster_id)
        prev = self.accepted.get(peer, {})
        announce = tuple(p for pfx, p in accepted.items() if prev.get(pfx) is not p)
        withdraw = tuple(pfx for pfx in prev if pfx not in accepted)
        for pfx, reason in rejected.items():
            if self.rejected.get(peer, {}).get(pfx) != reason:
                log.warning("peer %s: rejected %s: %s", peer, pfx, reason)
        self.accepted[peer], self.rejected[peer] = accepted, rejected
        if announce or withdraw:
            self.rib.apply(Update(peer, announce, withdraw))
        if over and pc is not None and pc.max_prefixes_action == "teardown" and self.speaker is not None \
                and peer not in self.held_down:
            reason = f"sent more than max_prefixes {pc.max_prefixes}: session closed"
            log.error("peer %s %s; it stays down for %ds", peer, reason, pc.max_prefixes_restart)
            self.speaker.teardown(peer, reason)
            self.held_down[peer] = (asyncio.get_running_loop().time() + pc.max_prefixes_restart, reason)
            # then take it out of ExaBGP, so it does not simply reconnect and flap
            asyncio.ensure_future(self._refresh_from_store(force=True))

    def _import_update(self, event) -> set | None:
        """The import policy for just the prefixes in one update (a full re-run per update is quadratic
        in a peer's table: 10k prefixes arrive in ~10-40 updates). False, changing nothing, when a prefix
        limit applies: a withdrawal may then let an earlier-rejected prefix in, which needs the full run.
        Returns the prefixes whose best paths changed, or None when it did nothing."""
        from bgpnet.speaker.messages import Update

        peer = event.peer
        pc = self.peer_configs.get(peer)
        if pc is not None and pc.max_prefixes:
            return None
        rules = self.rules
        if pc is not None and pc.accept_default:
            rules = dataclasses.replace(rules, accept_default=True)
        accepted = self.accepted.setdefault(peer, {})
        rejected = self.rejected.setdefault(peer, {})
        announce, withdraw = [], []
        for pfx in event.withdrawn:
            if rejected:
                rejected.pop(pfx, None)
            if accepted.pop(pfx, None) is not None:
                withdraw.append(pfx)
        latest = {path.prefix: path for path in event.announced}.values()  # as in adj_in: the last one wins
        ok, refused, _ = select_imports(latest, rules, 0, self.cfg.node.asn)
        for pfx, reason in refused.items():
            if rejected.get(pfx) != reason:
                log.warning("peer %s: rejected %s: %s", peer, pfx, reason)
            rejected[pfx] = reason
            if accepted.pop(pfx, None) is not None:
                withdraw.append(pfx)
        for pfx, path in ok.items():
            if rejected:
                rejected.pop(pfx, None)
            if accepted.get(pfx) is not path:
                accepted[pfx] = path
                announce.append(path)
        if announce or withdraw:
            return self.rib.apply(Update(peer, tuple(announce), tuple(withdraw)))
        return set()

    async def _event_loop(self) -> None:
        while True:
            event = await self._events.get()
            try:
                self.handle_event(event)
            except Exception:  # a bad event must not stop the agent
                log.exception("error handling %r", event)

    def handle_event(self, event) -> None:
        from bgpnet.speaker import messages as m

        now = time.time()
        loop_now = asyncio.get_running_loop().time()
        if isinstance(event, m.Update):
            adj = self.adj_in.setdefault(event.peer, {})
            if event.withdrawn:
                # Go on with the table's own prefix objects: every later lookup of them (accepted, the RIB,
                # the installed routes) then matches by identity, not by a call to Prefix.__eq__.
                gone = [path.prefix for path in map(adj.pop, event.withdrawn, repeat(None)) if path is not None]
                event = m.Update(event.peer, event.announced, tuple(gone))
            for path in event.announced:
                adj[path.prefix] = path
            changed = self._import_update(event)
            if changed is not None:
                self._dirty.add(changed)
                return
            self._import(event.peer)
        elif isinstance(event, m.PeerUp):
            st = self.peer_status.get(event.peer)
            if st:
                st.state, st.since, st.last_error, st.eor, st.ever_up = "established", now, "", False, True
            log.info("peer %s up", event.peer)
        elif isinstance(event, m.PeerDown):
            st = self.peer_status.get(event.peer)
            if st:
                st.state, st.since, st.last_error, st.eor = "down", now, event.reason, False
            gr = self.cfg.bgp.graceful_restart
            if event.notification or not gr:
                # A deliberate close: the peer's routes go now.
                self._forget_peer(event.peer, drop=True)
                log.info("peer %s down (%s): its routes are withdrawn", event.peer, event.reason)
            else:
                # The peer (or the link) failed: keep forwarding on its routes for the restart time.
                self._forget_peer(event.peer, drop=False)
                self.rib.mark_stale(event.peer)
                self.stale_deadline[event.peer] = loop_now + gr
                log.warning("peer %s lost (%s): keeping its routes as stale for %ds", event.peer, event.reason, gr)
        elif isinstance(event, m.EndOfRib):
            st = self.peer_status.get(event.peer)
            if st:
                st.eor = True
            swept = self.rib.sweep_stale(event.peer)
            self.stale_deadline.pop(event.peer, None)
            if swept:
                log.info("peer %s end-of-RIB: %d stale prefixes swept", event.peer, len(swept))
        elif isinstance(event, m.Notification):
            st = self.peer_status.get(event.peer)
            if st:
                st.last_error = event.reason
            log.warning("peer %s notification %s/%s: %s", event.peer, event.code, event.subcode, event.reason)
        elif isinstance(event, m.SpeakerShutdown):
            # Our ExaBGP died; sessions are gone but the kernel keeps forwarding on what it learned.
            for peer in list(self.adj_in):
                self._forget_peer(peer, drop=False)
            self.rib.mark_stale(None)
            self.stale_deadline[None] = loop_now + max(self.cfg.bgp.graceful_restart, 1)
            for st in self.peer_status.values():
                st.state, st.since, st.eor = "down", now, False
            log.warning("speaker stopped unexpectedly; learned routes kept as stale while it restarts")
        self._dirty.set()

    def in_sync(self, loop_now: float) -> bool:
        if self._synced:
            return True
        peers_done = all(self.peer_status.get(n.address) and self.peer_status[n.address].eor
                         for n in self.neighbors)
        if peers_done or loop_now >= self._sync_deadline:
            self._synced = True
            log.info("inputs in sync (%s): programming routes",
                     "end-of-RIB from every peer" if peers_done else "end-of-RIB timeout")
        return self._synced

    async def _store_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._refresh_from_store()
                await self._sync_policy()
            except BgpnetError as e:
                log.warning("datastore: %s", e)

    async def _sync_policy(self, force: bool = False) -> None:
        if self.policy is None:
            return
        rev = await asyncio.to_thread(self.store.revision, POLICY_KINDS)
        if force or rev != self._store_rev.get("policy"):
            # forced (the resync timer): re-read iptables too, so drift someone caused is repaired
            summary = await asyncio.to_thread(self.policy.sync, True if force else None)
            self._store_rev["policy"] = rev
            log.info("policy: %s", summary)

    async def _timer_loop(self) -> None:
        from bgpnet.ipam import gc as ipam_gc

        loop = asyncio.get_running_loop()
        next_resync = loop.time() + self.cfg.routing.resync_interval
        next_gc = loop.time() + self.cfg.ipam.gc_interval
        while True:
            await asyncio.sleep(0.5)
            now = loop.time()
            expired = [p for p, (until, _) in self.held_down.items() if now >= until]
            for peer in expired:
                del self.held_down[peer]
                log.info("peer %s: max-prefixes hold-down over; the session may come back", peer)
            if expired:
                await self._refresh_from_store(force=True)
            for peer, deadline in list(self.stale_deadline.items()):
                if now >= deadline:
                    swept = self.rib.sweep_stale(peer)
                    del self.stale_deadline[peer]
                    if swept:
                        log.info("restart time over for %s: %d stale prefixes removed", peer or "speaker",
                                 len(swept))
                    self._dirty.set()
            if not self._synced and self.in_sync(now):
                self._dirty.set()
            if self._status_due and (now - self._routes_changed_at >= STATUS_QUIET
                                     or now - self._status_at >= STATUS_MAX_AGE):
                self._write_status()
            if self.cfg.ipam.gc_interval and now >= next_gc:
                next_gc = now + self.cfg.ipam.gc_interval
                try:
                    await asyncio.to_thread(ipam_gc, self.store, self.cfg.node.name, self.cfg.ipam.release_grace)
                except BgpnetError as e:
                    log.warning("IPAM gc: %s", e)
            if now >= next_resync:
                next_resync = now + self.cfg.routing.resync_interval
                self._full_resync = True  # re-check tunnel devices and NAT too, not only routes
                self._dirty.set()  # a full read of the kernel repairs drift
                try:
                    await self._sync_policy(force=True)
                except BgpnetError as e:
                    log.warning("policy resync: %s", e)

    # -- output -----------------------------------------------------------------------------------

    def _reflect(self) -> None:
        """As a route reflector, hand the speaker the best paths to re-announce per neighbour."""
        if self.cfg.bgp.route_reflector_cluster_id is None or self.speaker is None:
            return
        reflected = reflected_routes(self.rib.best(), self.neighbors, self.cfg.bgp.route_reflector_cluster_id,
                                     self.router_ids, self.prefixes)
        if reflected != self.reflected:
            self.reflected = reflected
            self.speaker.set_peer_routes(reflected)
            log.info("reflecting %d paths to %d neighbours", sum(map(len, reflected.values())), len(reflected))

    def desired_plan(self):
        from bgpnet.ipip.dataplane import plan_dataplane

        best = self.rib.best() if self.rib is not None else {}
        return plan_dataplane(best, self.prefixes, self.cfg.node.address, self.pools, self.underlay_mtu,
                              self.tunnel_address)

    async def _apply_changes(self, changed: set):
        """Plan and write only the routes of `changed` prefixes (a burst of BGP updates): no full plan and
        no kernel read, which cost ~0.1 s each at 10k routes. None when the change reaches beyond those
        routes (tunnel devices, VXLAN neighbours, NAT): the caller then does the full apply. Full applies
        also run on every other change and on the resync timer, which repairs any drift."""
        from bgpnet.ipip.dataplane import plan_changes

        have = self._installed_by_dst
        changes = plan_changes(self.rib.best_paths, changed, have, self.prefixes, self.cfg.node.address,
                               self.pools, self.underlay_mtu, self.tunnel_address)
        routes, removed = changes.routes, changes.removed
        result = await asyncio.to_thread(self.dataplane.apply_route_changes, changes, have)
        if result is None:
            return None
        failed = {r.dst for r, _ in result.errors}
        for dst in removed:
            if dst not in failed:
                del have[dst]
        for r in routes:
            if r.dst not in failed:
                have[r.dst] = r
        if failed:
            self._dirty.set()  # a full apply sorts out what failed
        return result

    async def _reconcile_loop(self) -> None:
        backoff = 0.5
        loop = asyncio.get_running_loop()
        merge = True
        while True:
            await self._dirty.wait()
            if merge:  # a burst may be starting: let it gather into one apply
                await asyncio.sleep(MERGE_DELAY)
            changed = self._dirty.take()
            merge = True
            self._reflect()
            if self.speaker.hold_eor and self.in_sync(loop.time()):
                self.speaker.release_eor()  # our reflected routes are complete now: peers may sweep
            if not self.in_sync(loop.time()):
                self._write_status()
                continue
            full, self._full_resync = self._full_resync, False
            try:
                result = None
                if changed is not None and self.last_apply and not full:
                    result = await self._apply_changes(changed)
                if result is None:
                    plan = self.desired_plan()
                    await self._publish_pod_mtu(plan)
                    result = await asyncio.to_thread(self.dataplane.apply, plan, full)
                    self._installed_by_dst = {r.dst: r for r in plan.routes}
            except Exception as e:  # fail static: the last good routes stay; retry with backoff
                log.error("route apply failed, retrying in %.1fs: %s", backoff, e)
                self.apply_errors = [str(e)]
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                self._dirty.set()
                continue
            self.route_writes["add"] += result.added + result.replaced
            self.route_writes["remove"] += result.removed
            self.route_write_errors += len(result.errors)
            self.apply_errors = [f"{r.describe()}: {err}" for r, err in result.errors]
            if result.errors:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                self._dirty.set()
            else:
                backoff = 0.5
            # more came in while we wrote: the burst is on and has gathered already, go again at once
            merge = not self._dirty.is_set()
            if result.added or result.replaced or result.removed or result.errors:
                log.info("routes: %s", result.summary())
            self.last_apply = result.summary()
            if changed is None:
                self._write_status()
            else:  # maybe mid-burst: the timer writes it once routes are quiet
                self._status_due = True
                self._routes_changed_at = loop.time()

    def status(self, state: str = "running") -> dict:
        peers = []
        now = time.time()
        try:
            drops = md5_failures(Path("/proc/net/netstat").read_text())
        except OSError:
            drops = 0
        for n in self.neighbors:
            st = self.peer_status.get(n.address) or PeerStatus(str(n.address), n.name, n.peer_asn)
            hint = session_hint(st.state, now - st.since, bool(n.md5_password), st.ever_up, n.hold_time, drops)
            peers.append({
                "address": st.address, "name": st.name, "asn": st.asn,
                "type": "ibgp" if n.peer_asn == self.cfg.node.asn else "ebgp",
                "state": st.state, "since": st.since, "last_error": (f"{hint}; last event: {st.last_error}" if hint and st.last_error
                                                              else hint or st.last_error),
                "md5": bool(n.md5_password), "route_reflector_client": n.route_reflector_client,
                "prefixes_received": len(self.adj_in.get(n.address, {})),
                "prefixes_accepted": len(self.accepted.get(n.address, {})),
                "prefixes_rejected": len(self.rejected.get(n.address, {})),
                "rejected": {str(k): v for k, v in sorted(self.rejected.get(n.address, {}).items())[:20]},
            })
        try:
            loop_now = asyncio.get_running_loop().time()
        except RuntimeError:  # the metrics thread has no loop; the time is only for display
            loop_now = None
        for address, (until, reason) in sorted(self.held_down.items()):
            pc = self.peer_configs.get(address)
            left = f" (back in {max(0, int(until - loop_now))}s)" if loop_now is not None else ""
            peers.append({"address": str(address), "name": pc.label if pc else str(address),
                          "asn": pc.asn if pc else 0, "state": "held-down", "since": now,
                          "type": "ibgp" if pc and pc.asn == self.cfg.node.asn else "ebgp",
                          "last_error": reason + left, "md5": False, "route_reflector_client": False,
                          "prefixes_received": 0, "prefixes_accepted": 0, "prefixes_rejected": 0, "rejected": {}})
        return {
            "node": self.cfg.node.name, "address": str(self.cfg.node.address), "asn": self.cfg.node.asn,
            "state": state, "pid": os.getpid(), "in_sync": self._synced,
            "announced": [str(p) for p in self.prefixes], "peers": peers,
            "route_reflector_cluster_id": str(self.cfg.bgp.route_reflector_cluster_id or "") or None,
            "reflected": sum(map(len, self.reflected.values())), "tcp_md5_drops": drops,
            "routes": sorted(r.describe() for r in self.installed), "last_apply": self.last_apply,
            "errors": self.apply_errors, "speaker_restarts": getattr(self.speaker, "restarts", 0),
            "updated": time.time(),
        }

    def _write_status(self, state: str = "running") -> None:
        self._status_due = False
        with contextlib.suppress(RuntimeError):  # no running loop: called outside the agent's loop
            self._status_at = asyncio.get_running_loop().time()
        path = self.run_dir / "status.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(state), indent=1))
        tmp.replace(path)
