"""Adj-RIB-In per peer and BGP best-path selection with multipath (pure)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType

from bgpnet.model import Path
from bgpnet.speaker.messages import EndOfRib, Event, PeerDown, SpeakerShutdown, Update

log = logging.getLogger(__name__)

_ORIGIN_RANK = {"igp": 0, "egp": 1, "incomplete": 2}


def _rank(p: Path) -> tuple:
    """Lower is better. MED is compared between all paths, whatever the neighbour AS (like
    `always-compare-med`): that keeps the order total, so the result never depends on arrival order."""
    return (-p.local_pref, len(p.as_path), _ORIGIN_RANK.get(p.origin, 3), p.med, p.ibgp)


def _tiebreak(p: Path) -> tuple:
    return (p.next_hop, p.peer, p.as_path)


def select_best(paths: Iterable[Path]) -> tuple[Path, ...]:
    """The best paths of one prefix: every path equal to the best on local-pref, AS-path length, origin,
    MED and eBGP-over-iBGP forms the ECMP set, sorted by next hop then peer. Empty input gives ()."""
    paths = list(paths)
    if not paths:
        return ()
    best = min(_rank(p) for p in paths)
    return tuple(sorted((p for p in paths if _rank(p) == best), key=_tiebreak))


class Rib:
    """Paths received from each peer, with graceful-restart staleness.

    On a session loss without NOTIFICATION (TCP gone, peer restarting) and `graceful_restart`, the
    peer's paths stay but are marked stale until its End-of-RIB sweeps what it did not re-announce.
    A NOTIFICATION, or graceful_restart=False, drops the peer's paths at once."""

    def __init__(self, graceful_restart: bool = True):
        self.graceful_restart = graceful_restart
        self._in: dict[IPv4Address, dict[IPv4Network, Path]] = {}
        self._stale: dict[IPv4Address, set[IPv4Network]] = {}
        self._best: dict[IPv4Network, tuple[Path, ...]] = {}
        self._candidates: dict[IPv4Network, dict[int, Path]] = {}  # prefix -> int(peer) -> path
        self._best_view = MappingProxyType(self._best)

    # -- queries
    def peers(self) -> set[IPv4Address]:
        return {peer for peer, paths in self._in.items() if paths}

    def counts(self) -> dict[IPv4Address, int]:
        return {peer: len(paths) for peer, paths in self._in.items() if paths}

    def stale_counts(self) -> dict[IPv4Address, int]:
        return {peer: len(s) for peer, s in self._stale.items() if s}

    def paths(self, peer: IPv4Address) -> dict[IPv4Network, Path]:
        return dict(self._in.get(peer, {}))

    def best(self) -> dict[IPv4Network, tuple[Path, ...]]:
        return dict(self._best)

    @property
    def best_paths(self) -> Mapping[IPv4Network, tuple[Path, ...]]:
        """The best paths of every prefix, read-only and live (no copy: for lookups in a burst)."""
        return self._best_view

    # -- changes; each returns the prefixes whose best paths changed
    def apply(self, event: Event) -> set[IPv4Network]:
        if isinstance(event, Update):
            return self._update(event)
        if isinstance(event, EndOfRib):
            return self.sweep_stale(event.peer)
        if isinstance(event, PeerDown):
            if self.graceful_restart and not event.notification:
                return self.mark_stale(event.peer)
            return self.drop_peer(event.peer)
        if isinstance(event, SpeakerShutdown):
            return self.mark_stale() if self.graceful_restart else self.drop_all()
        return set()

    def _update(self, u: Update) -> set[IPv4Network]:
        peer = u.peer
        key = int(peer)  # candidates are keyed by the peer's int: IPv4Address hashes through hex()
        table = self._in.setdefault(peer, {})
        stale = self._stale.get(peer)
        candidates = self._candidates
        touched: set[IPv4Network] = set()
        for prefix in u.withdrawn:
            if table.pop(prefix, None) is not None:
                touched.add(prefix)
                paths = candidates[prefix]
                del paths[key]
                if not paths:
                    del candidates[prefix]
        for path in u.announced:
            if path.peer is not peer and path.peer != peer:
                raise ValueError(f"path {path.prefix} from {path.peer} in an update from {peer}")
            prefix = path.prefix
            table[prefix] = path
            paths = candidates.get(prefix)
            if paths is None:
                candidates[prefix] = {key: path}
            else:
                paths[key] = path
            touched.add(prefix)
        if stale:
            stale.difference_update(u.withdrawn)
            stale.difference_update(p.prefix for p in u.announced)
        return self._reselect(touched)

    def drop_peer(self, peer: IPv4Address) -> set[IPv4Network]:
        table = self._in.pop(peer, {})
        self._stale.pop(peer, None)
        self._forget(peer, table)
        if table:
            log.info("dropped %d paths from peer %s", len(table), peer)
        return self._reselect(set(table))

    def drop_all(self) -> set[IPv4Network]:
        changed: set[IPv4Network] = set()
        for peer in list(self._in):
            changed |= self.drop_peer(peer)
        return changed

    def mark_stale(self, peer: IPv4Address | None = None) -> set[IPv4Network]:
        """Keep the peer's (or every peer's) paths but mark them stale; best paths do not change."""
        for p in [peer] if peer is not None else list(self._in):
            table = self._in.get(p, {})
            if table:
                self._stale.setdefault(p, set()).update(table)
                log.info("peer %s: %d paths kept as stale (graceful restart)", p, len(table))
        return set()

    def sweep_stale(self, peer: IPv4Address) -> set[IPv4Network]:
        """Drop the peer's paths that are still stale (it did not re-announce them before its EOR)."""
        stale = self._stale.pop(peer, set())
        table = self._in.get(peer, {})
        for prefix in stale:
            table.pop(prefix, None)
        self._forget(peer, stale)
        if stale:
            log.info("peer %s: swept %d stale paths", peer, len(stale))
        return self._reselect(stale)

    def _forget(self, peer: IPv4Address, prefixes) -> None:
        candidates, key = self._candidates, int(peer)
        for prefix in prefixes:
            paths = candidates.get(prefix)
            if paths is not None and paths.pop(key, None) is not None and not paths:
                del candidates[prefix]

    def _reselect(self, prefixes: set[IPv4Network]) -> set[IPv4Network]:
        changed = set()
        candidates, best = self._candidates, self._best
        for prefix in prefixes:
            paths = candidates.get(prefix)
            old = best.get(prefix, ())
            if paths is None:
                if old:
                    del best[prefix]
                    changed.add(prefix)
                continue
            if len(paths) == 1:  # the common case: one peer has it
                [path] = paths.values()
                if len(old) == 1 and (old[0] is path or old[0] == path):
                    continue
                new = (path,)
            else:
                new = select_best(paths.values())
                if new == old:
                    continue
            best[prefix] = new
            changed.add(prefix)
        return changed
