"""The datastore interface: typed objects with a revision, compare-and-swap writes, and a change feed.

Objects are (kind, name, spec) with an opaque `revision` string. Namespaced kinds use "namespace/name"
as the name. Writes that carry a revision fail with `Conflict` when the stored object changed since it
was read (re-read and retry); this is what makes IPAM safe when several agents allocate at once.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Kinds every datastore serves. Kubernetes-native ones map to core/networking objects; the rest are
# bgpnet's own custom resources.
NODE = "Node"
POD = "Pod"
NAMESPACE = "Namespace"
NETWORK_POLICY = "NetworkPolicy"
IP_POOL = "IPPool"
IPAM_BLOCK = "IPAMBlock"
BLOCK_AFFINITY = "BlockAffinity"
IPAM_HANDLE = "IPAMHandle"
BGP_PEER = "BGPPeer"
BGP_CONFIGURATION = "BGPConfiguration"
KINDS = (NODE, POD, NAMESPACE, NETWORK_POLICY, IP_POOL, IPAM_BLOCK, BLOCK_AFFINITY, IPAM_HANDLE,
         BGP_PEER, BGP_CONFIGURATION)


@dataclass(frozen=True)
class Object:
    kind: str
    name: str
    spec: dict[str, Any] = field(default_factory=dict, compare=False)
    revision: str = ""


class Datastore(abc.ABC):
    """Implemented by `local.LocalDatastore` and `kubernetes.KubernetesDatastore`."""

    @abc.abstractmethod
    def get(self, kind: str, name: str) -> Object | None: ...

    @abc.abstractmethod
    def list(self, kind: str) -> list[Object]: ...

    @abc.abstractmethod
    def create(self, kind: str, name: str, spec: dict[str, Any]) -> Object:
        """Raise AlreadyExists if the object exists."""

    @abc.abstractmethod
    def update(self, obj: Object, spec: dict[str, Any]) -> Object:
        """Replace the spec if the stored revision is still `obj.revision`; else raise Conflict."""

    @abc.abstractmethod
    def delete(self, kind: str, name: str, revision: str | None = None) -> None:
        """Raise NotFound if absent; Conflict if `revision` is given and stale."""

    @abc.abstractmethod
    def revision(self, kinds: Iterable[str] | None = None) -> str:
        """An opaque token that changes whenever any object of `kinds` (default: all) changes."""

    def put(self, kind: str, name: str, spec: dict[str, Any]) -> Object:
        """Create or overwrite (last writer wins): for objects with a single writer, like a node's own record."""
        from bgpnet.errors import AlreadyExists, Conflict

        for _ in range(20):
            cur = self.get(kind, name)
            try:
                return self.create(kind, name, spec) if cur is None else self.update(cur, spec)
            except (AlreadyExists, Conflict):
                continue
        raise Conflict(f"{kind} {name}: too many concurrent writers")

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


def open_datastore(cfg) -> Datastore:
    """Open the datastore described by a `DatastoreConfig`."""
    if cfg.type == "kubernetes":
        from bgpnet.datastore.kubernetes import KubernetesDatastore

        return KubernetesDatastore.from_environment()
    from bgpnet.datastore.local import LocalDatastore

    return LocalDatastore(cfg.path)
