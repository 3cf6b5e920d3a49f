"""A Kubernetes API server emulator for tests: kmock's KubernetesEmulator plus the storage semantics
bgpnet relies on (resourceVersion, compare-and-swap, watch from a resourceVersion, 410 Gone, bookmarks).

What is kmock's (the library): the aiohttp HTTP server on loopback, parsing of Kubernetes URLs into
resource/namespace/name/action, API discovery, error rendering as `Status` objects, the request log, and
the reaction DSL that lets a test intercept any request. kmock 0.8's own object handling is too thin for
these tests (list resourceVersion is "...", no compare-and-swap, PUT unsupported, every watch replays all
objects, no bookmarks, no 410), so the handlers below replace it with an etcd-like store: one global
revision counter, an event history that can be compacted (-> 410 Gone), PUT/PATCH/DELETE preconditions
on metadata.resourceVersion (-> 409 Conflict), custom resources served only after their CRD is created,
and custom resources validated and pruned against the CRD's openAPIV3Schema like a real API server.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import socket
import threading
import uuid
from typing import Any

import attrs
import jsonschema
import kmock
from kmock._internal import apps, parsing
from kubernetes import client as k8s_client

_kmock_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock 0.8 reads /api/v1/namespaces[/NAME] as a namespace scope (and crashes on the bare
    collection); they are the Namespace collection and object. Fixed here for the emulator."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        return parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None, None)
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path

CORE = {
    ("", "v1", "nodes"): ("Node", False),
    ("", "v1", "pods"): ("Pod", True),
    ("", "v1", "namespaces"): ("Namespace", False),
    ("networking.k8s.io", "v1", "networkpolicies"): ("NetworkPolicy", True),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions"): ("CustomResourceDefinition", False),
}


def _err(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


def prune(value: Any, schema: dict[str, Any]) -> Any:
    """Drop fields the structural schema does not declare, as the API server does on write."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            props = schema.get("properties") or {}
            return {k: prune(v, props[k]) if k in props else v for k, v in value.items()}
        if "properties" in schema:
            props = schema["properties"]
            return {k: prune(v, props[k]) for k, v in value.items() if k in props}
        if isinstance(schema.get("additionalProperties"), dict):
            return {k: prune(v, schema["additionalProperties"]) for k, v in value.items()}
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(v, schema["items"]) for v in value]
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    bookmark_interval: float = 1.0
    history_limit: int = 10_000
    watch_gone_as_status: bool = False  # 410 as an HTTP status instead of an ERROR event in the stream
    watch_timeout_override: float | None = None  # end every watch after this many seconds
    _db: dict = attrs.field(factory=dict, init=False)  # (gvp, namespace, name) -> object
    _rv: int = attrs.field(default=1000, init=False)
    _history: list = attrs.field(factory=list, init=False)  # [(rv, gvp, event)]
    _compacted: int = attrs.field(default=0, init=False)  # watches from below this get 410
    _crds: dict = attrs.field(factory=dict, init=False)  # gvp -> (kind, namespaced, schema)
    _changes: Any = attrs.field(default=None, init=False)
    _drops: int = attrs.field(default=0, init=False)
    closing: bool = attrs.field(default=False, init=False)  # shutting down: refuse, end watches

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback[kmock.method.PUT] << self._serve_replace

    async def _handle(self, request):  # type: ignore[override]
        if self.closing:
            raise _err(503, "ServiceUnavailable", "the API server is shutting down")
        # Skip KubernetesEmulator's own write interceptor: our fallbacks below own the state, and a
        # reaction a test adds (kmock[...] << 503) now really stops the write from happening.
        return await apps.RawHandler._handle(self, request)

    # ------------------------------------------------------------------------- state helpers

    def _cond(self) -> asyncio.Condition:
        if self._changes is None:
            self._changes = asyncio.Condition()
        return self._changes

    def _kind(self, request) -> tuple[tuple[str, str, str], str, bool]:
        r = request.resource
        gvp = (r.group or "", r.version or "", r.plural or "")
        if gvp in CORE:
            kind, namespaced = CORE[gvp]
            return gvp, kind, namespaced
        if gvp in self._crds:
            kind, namespaced, _ = self._crds[gvp]
            return gvp, kind, namespaced
        raise _err(404, "NotFound", f"the server could not find the requested resource ({'/'.join(gvp)})")

    async def _record(self, gvp, etype: str, obj: dict) -> None:
        self._history.append((self._rv, gvp, {"type": etype, "object": copy.deepcopy(obj)}))
        if len(self._history) > self.history_limit:
            dropped = self._history[: len(self._history) - self.history_limit]
            self._compacted = dropped[-1][0]
            del self._history[: len(dropped)]
        async with self._cond():
            self._cond().notify_all()

    def _validate(self, gvp, obj: dict) -> dict:
        if gvp not in self._crds:
            return obj
        kind, _, schema = self._crds[gvp]
        if obj.get("kind") != kind:
            raise _err(400, "BadRequest", f"kind {obj.get('kind')!r} does not match {kind}")
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        body = prune(body, schema)
        try:
            jsonschema.Draft7Validator(schema).validate(body)
        except jsonschema.ValidationError as e:
            path = ".".join(str(p) for p in e.absolute_path)
            raise _err(422, "Invalid", f"{kind}.{GROUP_OF(gvp)} \"{obj['metadata'].get('name')}\" is invalid: "
                                       f"{path}: {e.message}") from None
        return {**{k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj}, **body}

    def _install_crd(self, crd: dict) -> None:
        spec = crd["spec"]
        for v in spec["versions"]:
            if v.get("served", True):
                gvp = (spec["group"], v["name"], spec["names"]["plural"])
                schema = (v.get("schema") or {}).get("openAPIV3Schema") or {}
                self._crds[gvp] = (spec["names"]["kind"], spec["scope"] == "Namespaced", schema)

    async def write(self, gvp, namespace: str | None, obj: dict, *, verb: str, precondition: str | None = None):
        """create / replace / delete one object; the single place that changes state."""
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            raise _err(422, "Invalid", "metadata.name: Required value")
        key = (gvp, namespace, name)
        cur = self._db.get(key)
        kind_name = f"{gvp[2]} \"{name}\""
        if verb == "create":
            if cur is not None:
                raise _err(409, "AlreadyExists", f"{kind_name} already exists")
            obj = self._validate(gvp, obj)
            meta = obj.setdefault("metadata", {})
            meta.update({"uid": str(uuid.uuid4()), "generation": 1,
                         "creationTimestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
            if namespace:
                meta["namespace"] = namespace
        else:
            if cur is None:
                raise _err(404, "NotFound", f"{kind_name} not found")
            want = precondition if verb == "delete" else (obj.get("metadata") or {}).get("resourceVersion")
            if want and want != cur["metadata"]["resourceVersion"]:
                raise _err(409, "Conflict", f"Operation cannot be fulfilled on {kind_name}: the object has been "
                                            "modified; please apply your changes to the latest version and try again")
            if verb == "delete":
                del self._db[key]
                self._rv += 1
                gone = copy.deepcopy(cur)
                gone["metadata"]["resourceVersion"] = str(self._rv)
                await self._record(gvp, "DELETED", gone)
                return gone
            obj = self._validate(gvp, obj)
            meta = obj.setdefault("metadata", {})
            for k in ("uid", "creationTimestamp", "namespace"):
                if k in cur["metadata"]:
                    meta[k] = cur["metadata"][k]
            meta["generation"] = cur["metadata"].get("generation", 1) + (obj.get("spec") != cur.get("spec"))
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._db[key] = obj
        if gvp == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            self._install_crd(obj)
        await self._record(gvp, "ADDED" if verb == "create" else "MODIFIED", obj)
        return copy.deepcopy(obj)

    # ------------------------------------------------------------------------------ handlers

    def _scope(self, request, namespaced: bool) -> str | None:
        return request.namespace if namespaced else None

    async def _serve_create(self, request):
        gvp, _, namespaced = self._kind(request)
        obj = copy.deepcopy(request.data) or {}
        return await self.write(gvp, self._scope(request, namespaced) or (obj.get("metadata") or {}).get("namespace")
                                if namespaced else None, obj, verb="create")

    async def _serve_replace(self, request):
        if request.resource is None or request.name is None:
            raise _err(405, "MethodNotAllowed", "PUT needs an object URL")
        gvp, _, namespaced = self._kind(request)
        obj = copy.deepcopy(request.data) or {}
        if (obj.get("metadata") or {}).get("name") != request.name:
            raise _err(400, "BadRequest", "the name of the object does not match the name on the URL")
        return await self.write(gvp, self._scope(request, namespaced), obj, verb="replace")

    async def _serve_update(self, request):  # PATCH
        gvp, _, namespaced = self._kind(request)
        ctype = request.headers.get("Content-Type", "")
        if "json-patch" in ctype:
            raise _err(415, "UnsupportedMediaType", "the emulator supports merge patches only")
        cur = self._db.get((gvp, self._scope(request, namespaced), request.name))
        if cur is None:
            raise _err(404, "NotFound", f"{gvp[2]} \"{request.name}\" not found")
        new = merge_patch(cur, request.data or {})
        # A resourceVersion in the patch is a precondition; without one the patch applies to the latest.
        if not ((request.data or {}).get("metadata") or {}).get("resourceVersion"):
            new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        return await self.write(gvp, self._scope(request, namespaced), new, verb="patch")

    async def _serve_delete(self, request):
        gvp, _, namespaced = self._kind(request)
        pre = ((request.data or {}).get("preconditions") or {}).get("resourceVersion") if isinstance(
            request.data, dict) else None
        return await self.write(gvp, self._scope(request, namespaced), {"metadata": {"name": request.name}},
                                verb="delete", precondition=pre)

    async def _serve_fetch(self, request):
        gvp, _, namespaced = self._kind(request)
        obj = self._db.get((gvp, self._scope(request, namespaced), request.name))
        if obj is None:
            raise _err(404, "NotFound", f"{gvp[2]} \"{request.name}\" not found")
        return copy.deepcopy(obj)

    def _matching(self, request, gvp) -> list[dict]:
        return [copy.deepcopy(o) for (g, ns, _), o in sorted(self._db.items(), key=lambda kv: str(kv[0]))
                if g == gvp and (request.namespace is None or ns == request.namespace)]

    async def _serve_list(self, request):
        gvp, kind, _ = self._kind(request)
        return {"apiVersion": "/".join(p for p in gvp[:2] if p), "kind": f"{kind}List",
                "metadata": {"resourceVersion": str(self._rv)}, "items": self._matching(request, gvp)}

    async def _serve_watch(self, request):
        gvp, kind, _ = self._kind(request)
        params = request.params
        since = params.get("resourceVersion") or "0"
        timeout = float(params.get("timeoutSeconds") or 1800)
        if self.watch_timeout_override is not None:
            timeout = self.watch_timeout_override
        bookmarks = params.get("allowWatchBookmarks") == "true"
        if since != "0" and int(since) < self._compacted:
            if self.watch_gone_as_status:
                raise _err(410, "Expired", f"too old resource version: {since} ({self._compacted})")
            yield b""
            yield {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                               "status": "Failure", "code": 410, "reason": "Expired",
                                               "message": f"too old resource version: {since} ({self._compacted})"}}
            return
        yield b""  # headers out now, as the API server does
        if since == "0":
            for obj in self._matching(request, gvp):
                yield {"type": "ADDED", "object": obj}
            pos = self._rv
        else:
            pos = int(since)
        drops = self._drops
        deadline = asyncio.get_running_loop().time() + timeout
        next_bookmark = asyncio.get_running_loop().time() + self.bookmark_interval
        while True:
            for rv, g, event in list(self._history):
                if rv > pos and g == gvp:
                    ns = event["object"]["metadata"].get("namespace")
                    if request.namespace is None or ns == request.namespace:
                        yield event
            pos = max(pos, self._rv)
            now = asyncio.get_running_loop().time()
            if now >= deadline or self._drops != drops or self.closing:
                return
            if bookmarks and now >= next_bookmark:
                yield {"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": "/".join(p for p in gvp[:2] if p),
                                                      "metadata": {"resourceVersion": str(self._rv)}}}
                next_bookmark = now + self.bookmark_interval
            cond = self._cond()
            async with cond:
                if self._rv == pos and self._drops == drops:
                    wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                    try:
                        await asyncio.wait_for(cond.wait(), timeout=max(0.01, wait))
                    except TimeoutError:
                        pass

    async def drop_watches(self) -> None:
        """End every open watch stream cleanly (as an API server does at its watch timeout)."""
        self._drops += 1
        async with self._cond():
            self._cond().notify_all()

    def compact(self) -> None:
        """Forget all history: a watch from any earlier resourceVersion now gets 410 Gone."""
        self._compacted = self._rv
        self._history.clear()


def GROUP_OF(gvp) -> str:  # noqa: N802 - reads like the API server's message
    return gvp[0] or "core"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmulatedApiServer:
    """The emulator on a loopback port, run by an event loop in a background thread, so that the
    synchronous kubernetes client can talk to it. `stop()`/`start()` emulate an API server restart
    (state survives, connections do not)."""

    def __init__(self, port: int | None = None, **options):
        self.port = port or free_port()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="k8s-emulator", daemon=True)
        self._thread.start()
        self.handler: ApiServerEmulator = self.call(self._make(options))
        self._server: kmock.Server | None = None

    async def _make(self, options) -> ApiServerEmulator:
        handler = ApiServerEmulator(**options)
        await handler.__aenter__()
        return handler

    def call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn, *args, **kwargs):
        async def wrapper():
            return fn(*args, **kwargs)

        return self.call(wrapper())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> EmulatedApiServer:
        if self._server is None:
            self._server = kmock.Server(self.handler, port=self.port)
            self.call(self._server.__aenter__())
        return self

    def stop(self) -> None:
        """Stop listening; open watches are ended first (aiohttp would wait for them to finish)."""
        if self._server is not None:
            server, self._server = self._server, None
            self.handler.closing = True
            self.drop_watches()
            self.call(server.__aexit__(None, None, None))
            self.handler.closing = False

    def close(self) -> None:
        self.stop()
        self.call(self.handler.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def api_client(self) -> k8s_client.ApiClient:
        cfg = k8s_client.Configuration()
        cfg.host = self.url
        return k8s_client.ApiClient(cfg)

    # kubectl-like helpers for tests -------------------------------------------------------------

    def create(self, gvp, obj: dict, namespace: str | None = None) -> dict:
        return self.call(self.handler.write(gvp, namespace, copy.deepcopy(obj), verb="create"))

    def replace(self, gvp, obj: dict, namespace: str | None = None) -> dict:
        return self.call(self.handler.write(gvp, namespace, copy.deepcopy(obj), verb="replace"))

    def delete(self, gvp, name: str, namespace: str | None = None) -> dict:
        return self.call(self.handler.write(gvp, namespace, {"metadata": {"name": name}}, verb="delete"))

    def get(self, gvp, name: str, namespace: str | None = None) -> dict | None:
        return copy.deepcopy(self.handler._db.get((gvp, namespace, name)))

    def drop_watches(self) -> None:
        self.call(self.handler.drop_watches())

    def compact(self) -> None:
        self.run(self.handler.compact)

    def requests(self) -> list[tuple[str, str, dict]]:
        """(method, path, query) of every request served so far (kmock's request log)."""
        return self.run(lambda: [(str(r.method.value), r.url.path, dict(r.params)) for r in self.handler._requests])


NODES = ("", "v1", "nodes")
PODS = ("", "v1", "pods")
NAMESPACES = ("", "v1", "namespaces")
POLICIES = ("networking.k8s.io", "v1", "networkpolicies")
CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")


def bgpnet_gvp(plural: str) -> tuple[str, str, str]:
    return ("bgpnet.io", "v1", plural)
