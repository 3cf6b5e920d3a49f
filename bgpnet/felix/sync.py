"""PolicyAgent: render this node's policy from the datastore and keep the kernel equal to it."""

from __future__ import annotations

import logging
import threading
import time

from bgpnet.datastore.base import NAMESPACE, NETWORK_POLICY, POD, Datastore
from bgpnet.felix.iptables import IptablesDriver
from bgpnet.felix.rules import POD_INTERFACE_PREFIX, Cluster, RenderCache, Ruleset, render_cluster

log = logging.getLogger(__name__)

POLICY_KINDS = (POD, NAMESPACE, NETWORK_POLICY)


class PolicyAgent:
    """The agent calls `sync()` on datastore changes and on its resync timer.

    A sync re-renders only when the Pod/Namespace/NetworkPolicy revision moved; it re-reads the
    kernel (iptables-save, ipset save) to repair drift when `full=True` or when the last read is older
    than `kernel_refresh_interval` seconds, and otherwise writes the diff against what it last wrote.
    """

    def __init__(self, store: Datastore, node_name: str, *, interface_prefix: str = POD_INTERFACE_PREFIX,
                 deny: str = "reject", kernel_refresh_interval: float = 10.0,
                 driver: IptablesDriver | None = None):
        self.store = store
        self.node = node_name
        self.interface_prefix = interface_prefix
        self.deny = deny
        self.kernel_refresh_interval = kernel_refresh_interval
        self.driver = driver or IptablesDriver()
        self.ruleset: Ruleset | None = None
        self._revision: str | None = None
        self._cache = RenderCache()
        self._lists: dict[str, tuple[str, list]] = {}
        self._last_read = float("-inf")
        self._reported_errors: set[str] = set()
        self._lock = threading.Lock()

    def _list(self, kind: str) -> list:
        # Re-list only kinds that changed: a policy edit need not re-read a thousand pods.
        rev = self.store.revision([kind])
        cached = self._lists.get(kind)
        if cached is not None and cached[0] == rev:
            return cached[1]
        objs = self.store.list(kind)
        self._lists[kind] = (rev, objs)
        return objs

    def render(self) -> tuple[Ruleset, int, int]:
        """Render from the datastore now: (ruleset, pods seen, policies seen)."""
        pods = self._list(POD)
        namespaces = self._list(NAMESPACE)
        policies = self._list(NETWORK_POLICY)
        cluster = Cluster(pods, namespaces, policies, self._cache)
        rs = render_cluster(cluster, self.node, interface_prefix=self.interface_prefix, deny=self.deny)
        return rs, len(pods), len(policies)

    def sync(self, full: bool | None = None) -> str:
        with self._lock:
            t0 = time.monotonic()
            revision = self.store.revision(POLICY_KINDS)  # read first: a later change triggers a new sync
            rendered = ""
            if self.ruleset is None or revision != self._revision:
                rs, npods, npol = self.render()
                self.ruleset, self._revision = rs, revision
                rendered = f"rendered {npods} pods / {npol} policies ({len(rs.endpoints)} local), "
                for err in rs.errors:
                    if err not in self._reported_errors:
                        log.error("node %s: %s", self.node, err)
                self._reported_errors = set(rs.errors)
            refresh = full if full is not None else \
                (time.monotonic() - self._last_read >= self.kernel_refresh_interval)
            res = self.driver.apply(self.ruleset, refresh=refresh)
            if res.read_kernel:
                self._last_read = time.monotonic()
            summary = (f"policy {self.node}: {rendered}{res}; {len(self.ruleset.errors)} rejected objects; "
                       f"total {(time.monotonic() - t0) * 1000:.1f} ms")
            (log.info if res.changed else log.debug)(summary)
            return summary

    def cleanup(self) -> str:
        with self._lock:
            res = self.driver.cleanup()
            self.ruleset, self._revision = None, None
            summary = f"policy {self.node}: cleaned up: {res}"
            log.info(summary)
            return summary
