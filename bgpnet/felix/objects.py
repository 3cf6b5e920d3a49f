"""Kubernetes YAML manifests -> datastore objects, for `bgpnet apply -f` / `bgpnet delete -f`.

Every document is validated before anything is stored, so one bad document changes nothing. Kinds
map to handlers in `HANDLERS`; other areas add theirs with `register_kind` (IPPool, ...).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bgpnet.datastore.base import BGP_PEER, IP_POOL, NAMESPACE, NETWORK_POLICY, Datastore
from bgpnet.errors import ConfigError, NotFound, ValidationError
from bgpnet.felix.policy import PROTOCOLS, check_name, parse_labels, parse_policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredObject:
    kind: str        # datastore kind
    name: str        # datastore name ("namespace/name" for namespaced kinds)
    spec: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.kind.lower()} {self.name}"


# (document, where) -> StoredObject; raises ValidationError naming the field
KindHandler = Callable[[dict[str, Any], str], StoredObject]


def _api_version(doc: dict, allowed: tuple[str, ...], where: str) -> None:
    v = doc.get("apiVersion")
    if v not in allowed:
        raise ValidationError(f"apiVersion must be {' or '.join(allowed)}, got {v!r}", f"{where}: apiVersion")


def _metadata(doc: dict, where: str) -> dict:
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        raise ValidationError("`metadata` (with name) is required", f"{where}: metadata")
    return meta


def namespace_object(doc: dict[str, Any], where: str) -> StoredObject:
    _api_version(doc, ("v1",), where)
    meta = _metadata(doc, where)
    name = check_name(meta.get("name"), f"{where}: metadata.name", namespace=True)
    labels = parse_labels(meta.get("labels"), f"{where}: metadata.labels")
    return StoredObject(NAMESPACE, name, {"labels": labels})


def network_policy_object(doc: dict[str, Any], where: str) -> StoredObject:
    _api_version(doc, ("networking.k8s.io/v1",), where)
    meta = dict(_metadata(doc, where))
    meta.setdefault("namespace", "default")
    stored = {"metadata": {k: meta[k] for k in ("name", "namespace", "labels") if k in meta},
              "spec": doc.get("spec")}
    pol = parse_policy(stored, where)  # the renderer runs the same validation on what it reads back
    return StoredObject(NETWORK_POLICY, pol.key, stored)


def ip_pool_object(doc: dict[str, Any], where: str) -> StoredObject:
    """bgpnet.io/v1 IPPool: fields checked here; overlap with other pools when it is written."""
    from bgpnet.ipam.block import Pool

    _api_version(doc, ("bgpnet.io/v1",), where)
    name = check_name(_metadata(doc, where).get("name"), f"{where}: metadata.name")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ValidationError("`spec` (with cidr) is required", f"{where}: spec")
    try:
        pool = Pool.from_spec(name, spec)
    except ValidationError as e:
        raise ValidationError(e.message, f"{where}: spec.{e.where.rsplit('.', 1)[-1]}") from None
    return StoredObject(IP_POOL, name, pool.to_spec())


def bgp_peer_object(doc: dict[str, Any], where: str) -> StoredObject:
    """bgpnet.io/v1 BGPPeer: the same fields as a `peers` entry of the agent config."""
    from bgpnet.config import PeerConfig, build

    _api_version(doc, ("bgpnet.io/v1",), where)
    name = check_name(_metadata(doc, where).get("name"), f"{where}: metadata.name")
    spec = doc.get("spec")
    try:
        build(PeerConfig, spec, "spec")
    except ConfigError as e:
        raise ValidationError(e.message, f"{where}: {e.where}") from None
    return StoredObject(BGP_PEER, name, dict(spec))


def _write_pool(store: Datastore, o: StoredObject) -> None:
    from bgpnet.ipam import add_pool

    add_pool(store, o.name, o.spec, replace=True)  # rejects overlaps and cidr changes of pools in use


HANDLERS: dict[str, KindHandler] = {
    "Namespace": namespace_object,
    "NetworkPolicy": network_policy_object,
    "IPPool": ip_pool_object,
    "BGPPeer": bgp_peer_object,
}
# Kinds whose write needs more than a plain put (checks against what is already stored).
WRITERS: dict[str, Callable[[Datastore, StoredObject], None]] = {IP_POOL: _write_pool}


def register_kind(kind: str, handler: KindHandler) -> None:
    """Let `bgpnet apply/delete` store another kind (e.g. the IPAM area's IPPool)."""
    HANDLERS[kind] = handler


def read_source(file: str | os.PathLike) -> tuple[str, str]:
    """(text, display name); "-" reads stdin."""
    if str(file) == "-":
        return sys.stdin.read(), "<stdin>"
    p = Path(file)
    try:
        return p.read_text(), str(p)
    except OSError as e:
        raise ValidationError(f"cannot read: {e.strerror}", str(p)) from None


def parse_manifests(text: str, source: str) -> list[StoredObject]:
    """Validate every document; raise one ValidationError listing all problems, or return the objects."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise ValidationError(f"not valid YAML: {e}", source) from None
    flat: list[tuple[str, Any]] = []
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            flat += [(f"{source} document {i + 1} item {j + 1}", item) for j, item in enumerate(doc["items"])]
        else:
            flat.append((f"{source} document {i + 1}", doc))
    objs, problems = [], []
    for where, doc in flat:
        try:
            if not isinstance(doc, dict):
                raise ValidationError(f"expected a Kubernetes object, got {type(doc).__name__}", where)
            kind = doc.get("kind")
            name = doc["metadata"].get("name") if isinstance(doc.get("metadata"), dict) else None
            if name:
                where = f"{where} ({kind} {name})"
            handler = HANDLERS.get(kind)
            if handler is None:
                raise ValidationError(f"unsupported kind {kind!r} (supported: {', '.join(sorted(HANDLERS))})",
                                      f"{where}: kind")
            objs.append(handler(doc, where))
        except ValidationError as e:
            problems.append(str(e))
    if problems:
        raise ValidationError("nothing was changed:\n  " + "\n  ".join(problems))
    seen = set()
    for o in objs:
        if (o.kind, o.name) in seen:
            raise ValidationError(f"{o} appears twice; nothing was changed", source)
        seen.add((o.kind, o.name))
    if not objs:
        raise ValidationError("no objects found", source)
    return objs


def apply_objects(store: Datastore, objs: list[StoredObject]) -> list[str]:
    out = []
    for o in objs:
        cur = store.get(o.kind, o.name)
        if cur is not None and cur.spec == o.spec:
            out.append(f"{o} unchanged")
            continue
        WRITERS.get(o.kind, lambda st, ob: st.put(ob.kind, ob.name, ob.spec))(store, o)
        out.append(f"{o} {'created' if cur is None else 'configured'}")
    return out


def delete_objects(store: Datastore, objs: list[StoredObject], ignore_not_found: bool = False) -> list[str]:
    out = []
    for o in objs:
        try:
            store.delete(o.kind, o.name)
            out.append(f"{o} deleted")
        except NotFound:
            if not ignore_not_found:
                out.append(f"{o} not found")
    return out


def apply_file(store: Datastore, file: str | os.PathLike) -> list[str]:
    text, source = read_source(file)
    return apply_objects(store, parse_manifests(text, source))


def delete_file(store: Datastore, file: str | os.PathLike, ignore_not_found: bool = False) -> list[str]:
    text, source = read_source(file)
    return delete_objects(store, parse_manifests(text, source), ignore_not_found)


def _lab_store(lab: Any) -> Datastore:
    if isinstance(lab, Datastore):
        return lab
    for attr in ("datastore", "store"):
        if isinstance(getattr(lab, attr, None), Datastore):
            return getattr(lab, attr)
    from bgpnet.datastore.local import LocalDatastore

    for attr in ("datastore_path", "store_path"):
        if getattr(lab, attr, None):
            return LocalDatastore(getattr(lab, attr))
    if isinstance(lab, str | os.PathLike):
        return LocalDatastore(lab)
    raise TypeError(f"lab_apply: cannot find the datastore of {lab!r}")


def lab_apply(lab: Any, file: str | os.PathLike, delete: bool = False) -> list[str]:
    """`bgpnet lab apply LAB -f FILE`: store the manifests in the lab's shared datastore.

    `lab` is the lab's Datastore, an object with `.datastore`/`.store` (a Datastore) or
    `.datastore_path`/`.store_path`, or the store file's path.
    """
    store = _lab_store(lab)
    return delete_file(store, file) if delete else apply_file(store, file)


# -- helpers for commands that create pods by hand (lab: --labels app=web,tier=fe --ports http=80/TCP)

def parse_labels_arg(text: str, where: str = "--labels") -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValidationError(f"{item!r} is not KEY=VALUE", where)
        labels[key] = value
    return parse_labels(labels, where)


def parse_ports_arg(text: str, where: str = "--ports") -> list[dict[str, Any]]:
    """"http=80/TCP,dns=53/UDP" -> [{name, port, protocol}] as stored on Pod objects."""
    ports = []
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        name, sep, rest = item.partition("=")
        number, _, proto = rest.partition("/")
        proto = (proto or "TCP").upper()
        if not sep or not name or not number.isdigit() or not 1 <= int(number) <= 65535 or proto not in PROTOCOLS:
            raise ValidationError(f"{item!r} is not NAME=PORT[/TCP|UDP|SCTP] (e.g. http=80/TCP)", where)
        ports.append({"name": name, "port": int(number), "protocol": proto})
    return ports
