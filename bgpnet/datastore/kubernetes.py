"""The Kubernetes datastore: cluster state straight from the API server (no database of our own).

Nodes, pods, namespaces and NetworkPolicies are Kubernetes' own objects; pools, blocks, affinities,
handles, BGP peers and BGP settings are bgpnet's cluster-scoped custom resources (group bgpnet.io).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

import tenacity
import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from bgpnet.datastore.base import (
    BGP_CONFIGURATION,
    BGP_PEER,
    BLOCK_AFFINITY,
    IP_POOL,
    IPAM_BLOCK,
    IPAM_HANDLE,
    KINDS,
    NAMESPACE,
    NETWORK_POLICY,
    NODE,
    POD,
    Datastore,
    Object,
)
from bgpnet.errors import AlreadyExists, ConfigError, Conflict, DatastoreError, NotFound

log = logging.getLogger(__name__)

GROUP = "bgpnet.io"
VERSION = "v1"
# Node annotations the agent publishes (it never writes anything else on its node object).
ANN_ADDRESS = "bgpnet.io/bgp-address"
ANN_ASN = "bgpnet.io/asn"
ANN_ROUTER_ID = "bgpnet.io/router-id"
ANN_NODE_EXTRA = "bgpnet.io/node-spec"  # JSON of any other keys of the Node spec
# The exact bgpnet name of a custom resource whose Kubernetes name had to be mangled.
ANN_NAME = "bgpnet.io/name"
_NODE_ANNOTATIONS = {"address": ANN_ADDRESS, "asn": ANN_ASN, "router_id": ANN_ROUTER_ID}
_NODE_READ_ONLY = ("labels", "pod_cidr", "pod_cidrs", "internal_ip")
# Metadata the API server owns; kept out of stored NetworkPolicy specs so that they round-trip.
_SERVER_METADATA = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields",
                    "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@dataclass(frozen=True)
class Resource:
    """Where a bgpnet kind lives in the Kubernetes API."""

    kind: str
    group: str  # "" for the core API
    version: str
    plural: str
    namespaced: bool = False
    custom: bool = False
    writable: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"


RESOURCES: dict[str, Resource] = {
    NODE: Resource(NODE, "", "v1", "nodes"),
    POD: Resource(POD, "", "v1", "pods", namespaced=True, writable=False),
    NAMESPACE: Resource(NAMESPACE, "", "v1", "namespaces", writable=False),
    NETWORK_POLICY: Resource(NETWORK_POLICY, "networking.k8s.io", "v1", "networkpolicies", namespaced=True),
    IP_POOL: Resource(IP_POOL, GROUP, VERSION, "ippools", custom=True),
    IPAM_BLOCK: Resource(IPAM_BLOCK, GROUP, VERSION, "ipamblocks", custom=True),
    BLOCK_AFFINITY: Resource(BLOCK_AFFINITY, GROUP, VERSION, "blockaffinities", custom=True),
    IPAM_HANDLE: Resource(IPAM_HANDLE, GROUP, VERSION, "ipamhandles", custom=True),
    BGP_PEER: Resource(BGP_PEER, GROUP, VERSION, "bgppeers", custom=True),
    BGP_CONFIGURATION: Resource(BGP_CONFIGURATION, GROUP, VERSION, "bgpconfigurations", custom=True),
}
assert set(RESOURCES) == set(KINDS)


# ------------------------------------------------------------------------------------------ names

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_NAME = 253


def k8s_name(name: str) -> str:
    """The Kubernetes object name for a bgpnet custom-resource name.

    Valid DNS subdomain names without dots stay as they are; anything else is lowered and every run of
    other characters becomes one "-": "10.244.0.64/26" -> "10-244-0-64-26", "kube-system/web" ->
    "kube-system-web". Such a name is lossy, so the exact name is also kept in the annotation
    `bgpnet.io/name` (see `object_name`), which makes the mapping reversible. Names longer than 253
    characters are cut and end in a hash of the full name.
    """
    if not name:
        raise ValueError("an object name must not be empty")
    if _DNS_SUBDOMAIN.match(name) and "." not in name and len(name) <= _MAX_NAME:
        return name
    out = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "x"
    if len(out) > _MAX_NAME:
        out = out[: _MAX_NAME - 9].rstrip("-") + "-" + sha256(name.encode()).hexdigest()[:8]
    return out


def object_name(metadata: dict[str, Any]) -> str:
    """The bgpnet name of a custom resource: the `bgpnet.io/name` annotation, else metadata.name."""
    return (metadata.get("annotations") or {}).get(ANN_NAME) or metadata["name"]


def split_name(name: str) -> tuple[str, str]:
    """ "namespace/name" -> (namespace, name) for namespaced kinds."""
    ns, sep, short = name.partition("/")
    if not sep or not ns or not short or "/" in short:
        raise ValueError(f"expected 'namespace/name', got {name!r}")
    return ns, short


# ------------------------------------------------------------------------------------- conversion


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def node_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """A core v1 Node -> the Node spec: address/asn/router_id from bgpnet's annotations (the address
    falls back to the node's InternalIP, without prefix length), labels, pod_cidr(s) from spec."""
    meta = obj.get("metadata") or {}
    ann = meta.get("annotations") or {}
    internal_ip = next((a.get("address") for a in (obj.get("status") or {}).get("addresses") or []
                        if a.get("type") == "InternalIP"), None)
    spec: dict[str, Any] = {}
    extra = ann.get(ANN_NODE_EXTRA)
    if extra:
        try:
            loaded = json.loads(extra)
            if isinstance(loaded, dict):
                spec.update(loaded)
        except ValueError:
            log.warning("node %s: annotation %s is not JSON; ignored", meta.get("name"), ANN_NODE_EXTRA)
    node = obj.get("spec") or {}
    spec.update({
        "address": ann.get(ANN_ADDRESS) or internal_ip,
        "asn": _int_or_none(ann.get(ANN_ASN)),
        "router_id": ann.get(ANN_ROUTER_ID) or None,
        "labels": dict(meta.get("labels") or {}),
        "pod_cidr": node.get("podCIDR"),
        "pod_cidrs": list(node.get("podCIDRs") or ([node["podCIDR"]] if node.get("podCIDR") else [])),
        "internal_ip": internal_ip,
    })
    return spec


def node_annotations(spec: dict[str, Any]) -> dict[str, str | None]:
    """The annotations that publish a Node spec (None removes an annotation in a merge patch).

    labels and pod CIDRs belong to the kubelet and the controller manager, so they are never written."""
    ann: dict[str, str | None] = {}
    for key, name in _NODE_ANNOTATIONS.items():
        value = spec.get(key)
        ann[name] = None if value is None or value == "" else str(value)
    extra = {k: v for k, v in spec.items() if k not in _NODE_ANNOTATIONS and k not in _NODE_READ_ONLY}
    ann[ANN_NODE_EXTRA] = json.dumps(extra, sort_keys=True) if extra else None
    return ann


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """A core v1 Pod -> {node, ip, ips, labels, ports, host_network, phase}; ports are the containers'
    ports [{name, port, protocol}] (named ports resolve NetworkPolicy port names)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ports = []
    for container in spec.get("containers") or []:
        for p in container.get("ports") or []:
            ports.append({"name": p.get("name") or "", "port": p.get("containerPort"),
                          "protocol": p.get("protocol") or "TCP"})
    return {
        "node": spec.get("nodeName") or "",
        "ip": status.get("podIP") or "",
        "ips": [i.get("ip") for i in status.get("podIPs") or [] if i.get("ip")],
        "labels": dict(meta.get("labels") or {}),
        "ports": ports,
        "host_network": bool(spec.get("hostNetwork")),
        "phase": status.get("phase") or "",
    }


def namespace_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return {"labels": dict((obj.get("metadata") or {}).get("labels") or {})}


def policy_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """A NetworkPolicy -> {"metadata": ..., "spec": ...} as `bgpnet apply` stores it (server-owned
    metadata and kubectl's last-applied annotation left out)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_METADATA}
    ann = {k: v for k, v in (meta.get("annotations") or {}).items() if k != _LAST_APPLIED}
    if ann:
        meta["annotations"] = ann
    else:
        meta.pop("annotations", None)
    return {"metadata": meta, "spec": obj.get("spec") or {}}


def to_object(res: Resource, obj: dict[str, Any]) -> Object:
    """A Kubernetes object (dict) -> a datastore Object; raises ValueError when it has no name."""
    meta = obj.get("metadata") or {}
    if not meta.get("name"):
        raise ValueError(f"{res.kind} without metadata.name")
    rv = str(meta.get("resourceVersion") or "")
    if res.namespaced:
        name = f"{meta.get('namespace') or 'default'}/{meta['name']}"
    elif res.custom:
        name = object_name(meta)
    else:
        name = meta["name"]
    if res.kind == NODE:
        spec = node_spec(obj)
    elif res.kind == POD:
        spec = pod_spec(obj)
    elif res.kind == NAMESPACE:
        spec = namespace_spec(obj)
    elif res.kind == NETWORK_POLICY:
        spec = policy_spec(obj)
    else:
        spec = obj.get("spec")
        spec = dict(spec) if isinstance(spec, dict) else {}
    return Object(res.kind, name, spec, rv)


def custom_body(res: Resource, name: str, spec: dict[str, Any], revision: str | None = None) -> dict[str, Any]:
    """The custom resource that stores `spec` verbatim under .spec."""
    meta: dict[str, Any] = {"name": k8s_name(name)}
    if meta["name"] != name:
        meta["annotations"] = {ANN_NAME: name}
    if revision:
        meta["resourceVersion"] = revision
    return {"apiVersion": res.api_version, "kind": res.kind, "metadata": meta, "spec": spec}


def policy_body(name: str, spec: dict[str, Any], revision: str | None = None) -> dict[str, Any]:
    ns, short = split_name(name)
    meta = {k: v for k, v in (spec.get("metadata") or {}).items() if k not in _SERVER_METADATA}
    meta.update({"name": short, "namespace": ns})
    if revision:
        meta["resourceVersion"] = revision
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
            "spec": spec.get("spec") or {}}


# ------------------------------------------------------------------------------------------ store


def _transient(exc: BaseException) -> bool:
    """Errors worth a retry: the API server is down, restarting, overloaded or timed out."""
    if isinstance(exc, ApiException):
        return exc.status in (0, 408, 429, 500, 502, 503, 504) or exc.status is None
    return isinstance(exc, (urllib3.exceptions.HTTPError, OSError, DatastoreError, _ShortWatch, ValueError))


class _Gone(Exception):
    """The watch's resourceVersion is too old (410 Gone / Expired): re-list."""


class _ShortWatch(Exception):
    """A watch ended at once without events: back off instead of spinning."""


def _api_error(exc: ApiException) -> dict[str, Any]:
    try:
        return json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}


class KubernetesDatastore(Datastore):
    """The Datastore interface over the Kubernetes API.

    Reads: `get` always asks the API server (IPAM's compare-and-swap needs the latest revision);
    `list` serves from the watch cache once that kind's watch has synced, else asks the API server.
    Watches start for a kind on its first `revision`/`wait_for_change`/`watch` call (or `start_watches`).
    Writes: `update` and `delete(revision=...)` are compare-and-swap on metadata.resourceVersion; a 409
    raises Conflict. Pods and Namespaces are read-only; on Nodes only bgpnet's annotations are written.
    """

    def __init__(self, api_client: k8s_client.ApiClient, *, request_timeout: float = 30.0,
                 watch_timeout: int = 300, max_backoff: float = 30.0, initial_backoff: float = 0.2):
        self.api = api_client
        self.request_timeout = request_timeout
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self.initial_backoff = initial_backoff
        self._cond = threading.Condition()
        self._watchers: dict[str, _Watcher] = {}
        self._closed = False

    @classmethod
    def from_environment(cls, **kwargs) -> KubernetesDatastore:
        """In-cluster service account config inside a pod, else $KUBECONFIG (or ~/.kube/config)."""
        configuration = k8s_client.Configuration()
        try:
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                k8s_config.load_incluster_config(client_configuration=configuration)
            else:
                k8s_config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                            client_configuration=configuration)
        except (k8s_config.ConfigException, OSError, TypeError) as e:
            raise ConfigError(f"no Kubernetes API config (in-cluster service account or KUBECONFIG): {e}",
                              "datastore.type") from None
        return cls(k8s_client.ApiClient(configuration), **kwargs)

    # ------------------------------------------------------------------------------ HTTP plumbing

    def request(self, method: str, path: str, *, query: list[tuple[str, Any]] | None = None,
                body: Any = None, content_type: str = "application/json", stream: bool = False,
                timeout: Any = None) -> Any:
        """One API call through the kubernetes client (auth, TLS, proxy from its Configuration).

        Returns the decoded JSON, or the raw urllib3 response when `stream`. Raises ApiException for
        HTTP errors and DatastoreError when the API server cannot be reached."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        m, url, h, b, _ = self.api.param_serialize(method, path, query_params=query or [],
                                                   header_params=headers, body=body,
                                                   auth_settings=["BearerToken"])
        try:
            resp = self.api.call_api(m, url, header_params=h, body=b,
                                     _request_timeout=timeout or self.request_timeout)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise DatastoreError(f"Kubernetes API {method} {path}: {e}") from None
        if not 200 <= resp.status <= 299:
            resp.read()
            raise ApiException.from_response(http_resp=resp, body=resp.data.decode("utf-8", "replace"),
                                             data=None)
        if stream:
            return resp.response
        resp.read()
        return json.loads(resp.data or b"{}")

    def _path(self, res: Resource, name: str | None = None) -> str:
        if name is None:
            return res.collection_path()
        if res.namespaced:
            ns, short = split_name(name)
            return f"{res.collection_path(ns)}/{short}"
        return f"{res.collection_path()}/{k8s_name(name) if res.custom else name}"

    @staticmethod
    def _resource(kind: str) -> Resource:
        try:
            return RESOURCES[kind]
        except KeyError:
            raise ValueError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})") from None

    def _fail(self, exc: ApiException, what: str, create: bool = False) -> None:
        status = _api_error(exc)
        msg = status.get("message") or exc.reason or str(exc)
        if exc.status == 404:
            raise NotFound(f"{what} not found ({msg})") from None
        if exc.status == 409:
            if create or status.get("reason") == "AlreadyExists":
                raise AlreadyExists(f"{what} already exists ({msg})") from None
            raise Conflict(f"{what} changed since it was read ({msg})") from None
        if exc.status == 422 or exc.status == 400:
            from bgpnet.errors import ValidationError

            raise ValidationError(f"rejected by the API server: {msg}", what) from None
        raise DatastoreError(f"{what}: Kubernetes API error {exc.status}: {msg}") from None

    # ------------------------------------------------------------------------------- interface

    def get(self, kind: str, name: str) -> Object | None:
        res = self._resource(kind)
        try:
            raw = self.request("GET", self._path(res, name))
        except ApiException as e:
            if e.status == 404:
                return None
            self._fail(e, f"{kind} {name}")
        obj = to_object(res, raw)
        # A custom resource whose k8s name collides with another bgpnet name is not this object.
        return obj if obj.name == name else None

    def list(self, kind: str) -> list[Object]:
        res = self._resource(kind)
        watcher = self._watchers.get(kind)
        if watcher is not None and watcher.synced.is_set():
            with self._cond:
                return sorted(watcher.cache.values(), key=lambda o: o.name)
        try:
            raw = self.request("GET", self._path(res))
        except ApiException as e:
            self._fail(e, f"{kind} list")
        return sorted(self._convert_items(res, raw.get("items") or []), key=lambda o: o.name)

    @staticmethod
    def _convert_items(res: Resource, items: list[dict[str, Any]]) -> list[Object]:
        out = []
        for item in items:
            try:
                out.append(to_object(res, item))
            except (ValueError, TypeError, AttributeError) as e:
                log.warning("skipping a bad %s from the API: %s", res.kind, e)
        return out

    def _read_only(self, res: Resource) -> None:
        if not res.writable:
            raise DatastoreError(f"{res.kind} objects are read-only in the Kubernetes datastore "
                                 "(they are managed by Kubernetes)")

    def create(self, kind: str, name: str, spec: dict[str, Any]) -> Object:
        res = self._resource(kind)
        self._read_only(res)
        if kind == NODE:
            # Nodes are registered by the kubelet; the agent only annotates its own node object.
            if self.get(NODE, name) is None:
                raise NotFound(f"Node {name} is not registered in the Kubernetes API (the kubelet creates it)")
            raise AlreadyExists(f"Node {name} already exists")
        if kind == NETWORK_POLICY:
            ns, _ = split_name(name)
            body, path = policy_body(name, spec), res.collection_path(ns)
        else:
            body, path = custom_body(res, name, spec), res.collection_path()
        try:
            raw = self.request("POST", path, body=body)
        except ApiException as e:
            self._fail(e, f"{kind} {name}", create=True)
        return self._wrote(res, raw)

    def update(self, obj: Object, spec: dict[str, Any]) -> Object:
        res = self._resource(obj.kind)
        self._read_only(res)
        what = f"{obj.kind} {obj.name}"
        try:
            if obj.kind == NODE:
                # A merge patch touches only our annotations; resourceVersion in it is the precondition.
                patch: dict[str, Any] = {"metadata": {"annotations": node_annotations(spec)}}
                if obj.revision:
                    patch["metadata"]["resourceVersion"] = obj.revision
                raw = self.request("PATCH", self._path(res, obj.name), body=patch,
                                   content_type="application/merge-patch+json")
            elif obj.kind == NETWORK_POLICY:
                raw = self.request("PUT", self._path(res, obj.name), body=policy_body(obj.name, spec, obj.revision))
            else:
                raw = self.request("PUT", self._path(res, obj.name),
                                   body=custom_body(res, obj.name, spec, obj.revision))
        except ApiException as e:
            self._fail(e, what)
        return self._wrote(res, raw)

    def put(self, kind: str, name: str, spec: dict[str, Any]) -> Object:
        if kind == NODE:
            # Last writer wins on our own annotations: no read needed, nothing else is touched.
            res = self._resource(kind)
            try:
                raw = self.request("PATCH", self._path(res, name),
                                   body={"metadata": {"annotations": node_annotations(spec)}},
                                   content_type="application/merge-patch+json")
            except ApiException as e:
                self._fail(e, f"Node {name}")
            return self._wrote(res, raw)
        return super().put(kind, name, spec)

    def delete(self, kind: str, name: str, revision: str | None = None) -> None:
        res = self._resource(kind)
        self._read_only(res)
        if kind == NODE:
            raise DatastoreError("Node objects are not deleted by bgpnet (kubectl delete node)")
        if res.custom and self.get(kind, name) is None:
            raise NotFound(f"{kind} {name} not found")
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if revision is not None:
            body["preconditions"] = {"resourceVersion": revision}
        try:
            self.request("DELETE", self._path(res, name), body=body)
        except ApiException as e:
            self._fail(e, f"{kind} {name}")
        watcher = self._watchers.get(kind)
        if watcher is not None:
            watcher.forget(name)

    def _wrote(self, res: Resource, raw: dict[str, Any]) -> Object:
        obj = to_object(res, raw)
        watcher = self._watchers.get(res.kind)
        if watcher is not None:
            watcher.learn(obj)  # read-your-writes for list() before the watch event arrives
        return obj

    # ------------------------------------------------------------------------- change feed

    def watch(self, kinds: Iterable[str] | None = None) -> None:
        """Start the watches for `kinds` (default: all) if they are not running."""
        for kind in kinds if kinds is not None else KINDS:
            res = self._resource(kind)
            with self._cond:
                if self._closed or kind in self._watchers:
                    continue
                w = self._watchers[kind] = _Watcher(self, res)
            w.start()

    start_watches = watch

    def synced(self, kinds: Iterable[str] | None = None) -> bool:
        """True once every kind in `kinds` has been listed (its watch cache is complete)."""
        kinds = list(kinds if kinds is not None else KINDS)
        return all(k in self._watchers and self._watchers[k].synced.is_set() for k in kinds)

    def wait_synced(self, kinds: Iterable[str] | None = None, timeout: float | None = None) -> bool:
        kinds = list(kinds if kinds is not None else KINDS)
        self.watch(kinds)
        deadline = None if timeout is None else time.monotonic() + timeout
        for k in kinds:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._watchers[k].synced.wait(left):
                return False
        return True

    def revision(self, kinds: Iterable[str] | None = None) -> str:
        """Per-kind change counters kept by the watches ("-" until a kind's first list is in)."""
        kinds = sorted(kinds if kinds is not None else KINDS)
        self.watch(kinds)
        with self._cond:
            return ",".join(f"{self._watchers[k].changes}" if self._watchers[k].synced.is_set() else "-"
                            for k in kinds)

    def wait_for_change(self, revision: str, kinds: Iterable[str] | None = None,
                        timeout: float | None = None) -> str:
        """Block until `revision(kinds)` differs from `revision` or `timeout` seconds pass; return it."""
        kinds = sorted(kinds if kinds is not None else KINDS)
        current = self.revision(kinds)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while current == revision and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
                current = ",".join(f"{self._watchers[k].changes}" if self._watchers[k].synced.is_set()
                                   else "-" for k in kinds)
        return current

    def _changed(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            watchers = list(self._watchers.values())
            self._cond.notify_all()
        for w in watchers:
            w.stop()
        for w in watchers:
            w.join(timeout=5)
        self.api.close()


def _newer(rv: str, than: str) -> bool:
    """Whether resourceVersion `rv` is later than `than`. Kubernetes calls them opaque, but every API
    server numbers them from etcd's revision; if one is not a number, trust the newcomer."""
    if rv.isdigit() and than.isdigit():
        return int(rv) > int(than)
    return rv != than


class _Watcher(threading.Thread):
    """List then watch one kind from the list's resourceVersion, keeping a cache and a change counter.

    Re-lists on 410 Gone; reconnects with exponential backoff and jitter (tenacity) when the API
    server is unreachable or the stream breaks; asks for bookmarks so a quiet kind's resourceVersion
    stays fresh. A watch that ends at once without events counts as a failure so it never spins.
    """

    def __init__(self, store: KubernetesDatastore, res: Resource):
        super().__init__(name=f"bgpnet-watch-{res.plural}", daemon=True)
        self.store = store
        self.res = res
        self.cache: dict[str, Object] = {}
        self.changes = 0
        self.synced = threading.Event()
        self.rv: str | None = None
        self.lists = 0  # how often it listed (tests and status)
        self.watches = 0  # how many watch requests it made
        self._stop_event = threading.Event()
        self._resp = None

    # --------------------------------------------------------------------------- cache updates

    def _bump(self) -> None:
        self.changes += 1
        self.store._cond.notify_all()

    def learn(self, obj: Object) -> None:
        with self.store._cond:
            old = self.cache.get(obj.name)
            if old is not None and not _newer(obj.revision, old.revision):
                return
            self.cache[obj.name] = obj
            self._bump()

    def forget(self, name: str) -> None:
        with self.store._cond:
            if self.cache.pop(name, None) is not None:
                self._bump()

    def _replace(self, objs: list[Object]) -> None:
        new = {o.name: o for o in objs}
        with self.store._cond:
            same = ({n: o.revision for n, o in new.items()} == {n: o.revision for n, o in self.cache.items()})
            self.cache = new
            first = not self.synced.is_set()
            self.synced.set()
            if not same or first:
                self._bump()

    # ---------------------------------------------------------------------------------- loop

    def stop(self) -> None:
        self._stop_event.set()
        resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()  # unblocks a read in progress (urllib3 >= 2.3)
            except Exception:  # noqa: BLE001 - best effort on a connection we are dropping
                try:
                    resp.close()
                except Exception:  # noqa: BLE001
                    pass

    def run(self) -> None:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_transient),
            wait=(tenacity.wait_exponential(multiplier=self.store.initial_backoff, max=self.store.max_backoff)
                  + tenacity.wait_random(0, self.store.initial_backoff)),
            stop=tenacity.stop_when_event_set(self._stop_event),
            sleep=self._stop_event.wait,
            before_sleep=self._log_retry,
            reraise=True,
        )
        while not self._stop_event.is_set():
            try:
                retrying(self._cycle)
            except _Gone:
                log.info("watch %s: resourceVersion %s expired (410 Gone); re-listing", self.res.plural, self.rv)
                self.rv = None
            except Exception as e:  # noqa: BLE001 - a watcher must outlive any single bad answer
                if self._stop_event.is_set():
                    break
                log.error("watch %s: %s; retrying in %.0fs", self.res.plural, e, self.store.max_backoff)
                self._stop_event.wait(self.store.max_backoff)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("watch %s: %s; retry %d in %.1fs", self.res.plural, exc, state.attempt_number,
                    state.upcoming_sleep)

    def _cycle(self) -> None:
        if self._stop_event.is_set():
            return
        if self.rv is None:
            self._list()
        self._watch()

    def _list(self) -> None:
        self.lists += 1
        try:
            raw = self.store.request("GET", self.res.collection_path())
        except ApiException as e:
            if e.status in (401, 403, 404):
                # Missing CRDs or RBAC: retried with backoff, but say plainly what is wrong.
                log.error("list %s: %s %s (are the CRDs and RBAC from conf/kubernetes applied?)",
                          self.res.plural, e.status, e.reason)
                raise DatastoreError(f"list {self.res.plural}: {e.status} {e.reason}") from None
            raise
        self._replace(self.store._convert_items(self.res, raw.get("items") or []))
        self.rv = str((raw.get("metadata") or {}).get("resourceVersion") or "") or None
        log.debug("listed %s: %d objects at resourceVersion %s", self.res.plural, len(self.cache), self.rv)

    def _watch(self) -> None:
        query: list[tuple[str, Any]] = [("watch", "true"), ("allowWatchBookmarks", "true"),
                                        ("timeoutSeconds", self.store.watch_timeout)]
        if self.rv:
            query.append(("resourceVersion", self.rv))
        started = time.monotonic()
        events = 0
        self.watches += 1
        try:
            resp = self.store.request("GET", self.res.collection_path(), query=query, stream=True,
                                      timeout=(self.store.request_timeout, self.store.watch_timeout + 30))
        except ApiException as e:
            if e.status == 410:
                raise _Gone() from None
            raise
        self._resp = resp
        try:
            for line in iter_resp_lines(resp):
                if self._stop_event.is_set():
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                events += 1
                self._apply(event)
        except urllib3.exceptions.ProtocolError as e:
            if self._stop_event.is_set():
                return
            raise DatastoreError(f"watch {self.res.plural} broke: {e}") from None
        finally:
            self._resp = None
            resp.release_conn()
        if events == 0 and time.monotonic() - started < 1.0 and not self._stop_event.is_set():
            raise _ShortWatch(f"watch {self.res.plural} ended at once without events")

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        raw = event.get("object") or {}
        if kind == "ERROR":
            if raw.get("code") == 410 or raw.get("reason") in ("Expired", "Gone"):
                raise _Gone()
            raise DatastoreError(f"watch {self.res.plural}: {raw.get('code')} {raw.get('message')}")
        rv = str((raw.get("metadata") or {}).get("resourceVersion") or "")
        if kind == "BOOKMARK":
            if rv:
                self.rv = rv
            return
        try:
            obj = to_object(self.res, raw)
        except (ValueError, TypeError, AttributeError) as e:
            log.warning("watch %s: skipping a bad object: %s", self.res.plural, e)
            if rv:
                self.rv = rv
            return
        if kind in ("ADDED", "MODIFIED"):
            self.learn(obj)
        elif kind == "DELETED":
            self.forget(obj.name)
        if rv:
            self.rv = rv
