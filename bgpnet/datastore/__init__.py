"""Where cluster state lives: a revisioned object store (local SQLite by default, or the Kubernetes API)."""

from bgpnet.datastore.base import KINDS, Datastore, Object, open_datastore

__all__ = ["KINDS", "Datastore", "Object", "open_datastore"]
