"""NetworkPolicy, Namespace and Pod objects parsed into a validated model (pure; no kernel, no store).

Validation follows the Kubernetes API server's rules for networking.k8s.io/v1 NetworkPolicy, so a
policy `bgpnet apply` accepts is one Kubernetes would accept, and errors name the offending field.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from bgpnet.errors import ValidationError

PROTOCOLS = ("TCP", "UDP", "SCTP")
INGRESS = "Ingress"
EGRESS = "Egress"
# Kubernetes labels every namespace with its own name; selectors such as
# `kubernetes.io/metadata.name: x` rely on it, so namespaces without a stored object get it too.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_IFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


# ---------------------------------------------------------------------------------------------- selectors

class CachedHash:
    """For frozen dataclasses used as memo keys: hash the fields once, not on every lookup."""

    def __hash__(self) -> int:
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", h)
        return h


class Labels(tuple):
    """Sorted (key, value) pairs, with a canonical string form that keys the selector-result memo
    (a str caches its own hash in C, which matters at ~10k lookups per render)."""

    @cached_property
    def text(self) -> str:
        return "\0".join(f"{k}={v}" for k, v in self)


@dataclass(frozen=True)
class Selector(CachedHash):
    """A label selector: matchLabels AND every matchExpression. Empty selects everything."""

    labels: tuple[tuple[str, str], ...] = ()
    exprs: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (key, operator, sorted values)

    def matches(self, labels: Mapping[str, str]) -> bool:
        for k, v in self.labels:
            if labels.get(k) != v:
                return False
        for k, op, values in self.exprs:
            if op == "In":
                if labels.get(k) not in values:
                    return False
            elif op == "NotIn":  # an absent label is "not in" any set, as in Kubernetes
                if k in labels and labels[k] in values:
                    return False
            elif op == "Exists":
                if k not in labels:
                    return False
            elif k in labels:  # DoesNotExist
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.labels and not self.exprs

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in self.labels]
        for k, op, values in self.exprs:
            vs = ",".join(values)
            parts.append({"In": f"{k} in ({vs})", "NotIn": f"{k} notin ({vs})", "Exists": k,
                          "DoesNotExist": f"!{k}"}[op])
        return ",".join(parts) if parts else "<all>"


# ---------------------------------------------------------------------------------------------- policy model

@dataclass(frozen=True)
class Peer(CachedHash):
    """One entry of `from`/`to`: pods (selectors, ANDed) or an ipBlock."""

    namespace: str | None = None            # podSelector alone: pods of the policy's own namespace
    namespace_selector: Selector | None = None
    pod_selector: Selector | None = None    # None: every pod of the selected namespaces
    cidr: str | None = None                 # ipBlock
    excepts: tuple[str, ...] = ()

    @property
    def is_ip_block(self) -> bool:
        return self.cidr is not None

    def __str__(self) -> str:
        if self.cidr is not None:
            return f"ipBlock {self.cidr}" + (f" except {','.join(self.excepts)}" if self.excepts else "")
        ns = f"namespace {self.namespace}" if self.namespace_selector is None else \
            f"namespaces [{self.namespace_selector}]"
        pods = "all pods" if self.pod_selector is None else f"pods [{self.pod_selector}]"
        return f"{pods} in {ns}"


@dataclass(frozen=True)
class PortMatch:
    protocol: str                 # TCP, UDP or SCTP
    port: int | str | None = None  # None: every port of the protocol; str: a named container port
    end_port: int | None = None

    def __str__(self) -> str:
        if self.port is None:
            return f"all/{self.protocol}"
        if self.end_port is not None:
            return f"{self.port}-{self.end_port}/{self.protocol}"
        return f"{self.port}/{self.protocol}"


@dataclass(frozen=True)
class PolicyRule:
    peers: tuple[Peer, ...] = ()       # empty: any peer
    ports: tuple[PortMatch, ...] = ()  # empty: any port and protocol


@dataclass(frozen=True)
class Policy(CachedHash):
    namespace: str
    name: str
    pod_selector: Selector
    types: tuple[str, ...]
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()

    @cached_property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def rules(self, direction: str) -> tuple[PolicyRule, ...]:
        return self.ingress if direction == INGRESS else self.egress


@dataclass(frozen=True)
class ContainerPort:
    name: str
    port: int
    protocol: str


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    node: str
    ip: str | None
    labels: tuple[tuple[str, str], ...]
    ports: tuple[ContainerPort, ...] = ()
    interface: str = ""

    @cached_property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def named_port(self, name: str, protocol: str) -> int | None:
        for p in self.ports:
            if p.name == name and p.protocol == protocol:
                return p.port
        return None


# ---------------------------------------------------------------------------------------------- parsing

def _expect(value: Any, typ: type | tuple, where: str, what: str):
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ValidationError(f"must be {what}, got {type(value).__name__} {value!r}", where)
    return value


def _only_fields(obj: Mapping, allowed: tuple[str, ...], where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise ValidationError(f"unknown field `{key}` (allowed: {', '.join(allowed)})",
                                  f"{where}.{key}" if where else key)


def _label_key(key: Any, where: str) -> str:
    _expect(key, str, where, "a string")
    prefix, _, name = key.rpartition("/")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name) or (
            prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))) or ("/" in key and not prefix):
        raise ValidationError(f"invalid label key {key!r}: a name of up to 63 characters (letters, digits, "
                              "'-', '_', '.'; alphanumeric at both ends), optionally prefixed by a DNS "
                              "subdomain and '/'", where)
    return key


def _label_value(value: Any, where: str) -> str:
    if isinstance(value, bool) or value is None or not isinstance(value, str | int | float):
        raise ValidationError(f"label value must be a string, got {value!r}", where)
    value = str(value) if not isinstance(value, str) else value
    if len(value) > 63 or not _LABEL_NAME.match(value):
        raise ValidationError(f"invalid label value {value!r}: up to 63 characters (letters, digits, "
                              "'-', '_', '.'; alphanumeric at both ends)", where)
    return value


def parse_labels(obj: Any, where: str) -> dict[str, str]:
    if obj is None:
        return {}
    _expect(obj, dict, where, "a mapping of label key to value")
    return {_label_key(k, f"{where}.{k}"): _label_value(v, f"{where}.{k}") for k, v in obj.items()}


def parse_selector(obj: Any, where: str) -> Selector:
    if obj is None:
        return Selector()
    _expect(obj, dict, where, "a label selector (matchLabels / matchExpressions)")
    _only_fields(obj, ("matchLabels", "matchExpressions"), where)
    labels = parse_labels(obj.get("matchLabels"), f"{where}.matchLabels")
    exprs = []
    raw_exprs = obj.get("matchExpressions") or []
    _expect(raw_exprs, list, f"{where}.matchExpressions", "a list")
    for i, e in enumerate(raw_exprs):
        w = f"{where}.matchExpressions[{i}]"
        _expect(e, dict, w, "a mapping with key, operator, values")
        _only_fields(e, ("key", "operator", "values"), w)
        if "key" not in e:
            raise ValidationError("`key` is required", f"{w}.key")
        key = _label_key(e["key"], f"{w}.key")
        op = e.get("operator")
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValidationError(f"operator must be In, NotIn, Exists or DoesNotExist, got {op!r}",
                                  f"{w}.operator")
        values = e.get("values") or []
        _expect(values, list, f"{w}.values", "a list of strings")
        values = [_label_value(v, f"{w}.values[{j}]") for j, v in enumerate(values)]
        if op in ("In", "NotIn") and not values:
            raise ValidationError(f"operator {op} needs at least one value", f"{w}.values")
        if op in ("Exists", "DoesNotExist") and values:
            raise ValidationError(f"operator {op} takes no values", f"{w}.values")
        exprs.append((key, op, tuple(sorted(set(values)))))
    return Selector(tuple(sorted(labels.items())), tuple(sorted(exprs)))


def _parse_cidr(value: Any, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    _expect(value, str, where, "a CIDR string such as 10.0.0.0/16")
    if "/" not in value:
        raise ValidationError(f"{value!r} is not a CIDR (missing /prefix length)", where)
    try:
        return ipaddress.ip_network(value, strict=False)  # like Kubernetes, host bits are tolerated
    except ValueError as e:
        raise ValidationError(f"{value!r} is not a valid CIDR: {e}", where) from None


def _parse_peer(obj: Any, namespace: str, where: str) -> Peer:
    _expect(obj, dict, where, "a peer (podSelector, namespaceSelector and/or ipBlock)")
    _only_fields(obj, ("podSelector", "namespaceSelector", "ipBlock"), where)
    if not obj:
        raise ValidationError("a peer needs podSelector, namespaceSelector or ipBlock", where)
    if "ipBlock" in obj:
        if len(obj) > 1:
            raise ValidationError("ipBlock cannot be combined with podSelector or namespaceSelector "
                                  "in one peer (use separate peers)", where)
        w = f"{where}.ipBlock"
        block = _expect(obj["ipBlock"], dict, w, "a mapping with cidr and except")
        _only_fields(block, ("cidr", "except"), w)
        if "cidr" not in block:
            raise ValidationError("`cidr` is required", f"{w}.cidr")
        net = _parse_cidr(block["cidr"], f"{w}.cidr")
        excepts = []
        raw = block.get("except") or []
        _expect(raw, list, f"{w}.except", "a list of CIDRs")
        for i, e in enumerate(raw):
            ex = _parse_cidr(e, f"{w}.except[{i}]")
            if ex.version != net.version or not ex.subnet_of(net) or ex.prefixlen <= net.prefixlen:
                raise ValidationError(f"{e!r} must be strictly inside cidr {net}", f"{w}.except[{i}]")
            excepts.append(str(ex))
        return Peer(cidr=str(net), excepts=tuple(excepts))
    ns_sel = parse_selector(obj["namespaceSelector"], f"{where}.namespaceSelector") \
        if "namespaceSelector" in obj and obj["namespaceSelector"] is not None else None
    pod_sel = parse_selector(obj["podSelector"], f"{where}.podSelector") \
        if "podSelector" in obj and obj["podSelector"] is not None else None
    if ns_sel is None and pod_sel is None:
        raise ValidationError("a peer needs podSelector, namespaceSelector or ipBlock", where)
    if pod_sel is not None and pod_sel.empty:
        pod_sel = None
    if ns_sel is None:
        return Peer(namespace=namespace, pod_selector=pod_sel)
    return Peer(namespace_selector=ns_sel, pod_selector=pod_sel)


def _parse_port(obj: Any, where: str) -> PortMatch:
    _expect(obj, dict, where, "a mapping with protocol, port, endPort")
    _only_fields(obj, ("protocol", "port", "endPort"), where)
    proto = obj.get("protocol", "TCP")
    if proto not in PROTOCOLS:
        raise ValidationError(f"protocol must be TCP, UDP or SCTP, got {proto!r}", f"{where}.protocol")
    port = obj.get("port")
    end = obj.get("endPort")
    if port is not None:
        if isinstance(port, str):
            if len(port) > 15 or not _PORT_NAME.match(port) or "--" in port or not re.search("[a-z]", port):
                raise ValidationError(f"port {port!r} is neither a number nor a valid port name (up to 15 "
                                      "lower-case letters, digits and '-', with at least one letter)",
                                      f"{where}.port")
        else:
            _expect(port, int, f"{where}.port", "a port number or a port name")
            if not 1 <= port <= 65535:
                raise ValidationError(f"port {port} is out of range 1-65535", f"{where}.port")
    if end is not None:
        _expect(end, int, f"{where}.endPort", "a port number")
        if port is None:
            raise ValidationError("endPort needs port", f"{where}.endPort")
        if isinstance(port, str):
            raise ValidationError("endPort cannot be used with a named port", f"{where}.endPort")
        if not port <= end <= 65535:
            raise ValidationError(f"endPort {end} must be between port {port} and 65535", f"{where}.endPort")
        if end == port:
            end = None
    return PortMatch(proto, port, end)


def _parse_rules(obj: Any, namespace: str, peers_field: str, where: str) -> tuple[PolicyRule, ...]:
    if obj is None:
        return ()
    _expect(obj, list, where, "a list of rules")
    rules = []
    for i, r in enumerate(obj):
        w = f"{where}[{i}]"
        if r is None:
            r = {}
        _expect(r, dict, w, f"a rule with `{peers_field}` and `ports`")
        _only_fields(r, (peers_field, "ports"), w)
        peers = r.get(peers_field) or []
        _expect(peers, list, f"{w}.{peers_field}", "a list of peers")
        ports = r.get("ports") or []
        _expect(ports, list, f"{w}.ports", "a list of ports")
        rules.append(PolicyRule(
            peers=tuple(_parse_peer(p, namespace, f"{w}.{peers_field}[{j}]") for j, p in enumerate(peers)),
            ports=tuple(_parse_port(p, f"{w}.ports[{j}]") for j, p in enumerate(ports))))
    return tuple(rules)


def check_name(value: Any, where: str, namespace: bool = False) -> str:
    _expect(value, str, where, "a string")
    limit, rx, what = (63, _DNS_LABEL, "DNS label") if namespace else (253, _DNS_SUBDOMAIN, "DNS subdomain")
    if not value or len(value) > limit or not rx.match(value):
        raise ValidationError(f"{value!r} is not a valid {what} (lower-case letters, digits, '-'"
                              f"{'' if namespace else ', .'}; up to {limit} characters)", where)
    return value


def parse_policy(obj: Mapping[str, Any], where: str = "") -> Policy:
    """A stored or applied NetworkPolicy ({metadata, spec}) -> Policy; ValidationError names the field."""
    _expect(obj, dict, where or "NetworkPolicy", "a NetworkPolicy object")
    meta = obj.get("metadata") or {}
    _expect(meta, dict, f"{where}.metadata" if where else "metadata", "a mapping")
    name = check_name(meta.get("name"), _join(where, "metadata.name"))
    namespace = check_name(meta.get("namespace") or "default", _join(where, "metadata.namespace"), namespace=True)
    if "spec" not in obj:
        raise ValidationError("`spec` is required", _join(where, "spec"))
    spec = _expect(obj["spec"] if obj["spec"] is not None else {}, dict, _join(where, "spec"), "a mapping")
    ws = _join(where, "spec")
    _only_fields(spec, ("podSelector", "policyTypes", "ingress", "egress"), ws)
    pod_selector = parse_selector(spec.get("podSelector"), f"{ws}.podSelector")
    types = spec.get("policyTypes")
    if types is None or types == []:
        # Kubernetes defaulting: always Ingress; Egress only when egress rules are present.
        types = [INGRESS] + ([EGRESS] if spec.get("egress") else [])
    _expect(types, list, f"{ws}.policyTypes", "a list of Ingress / Egress")
    for i, t in enumerate(types):
        if t not in (INGRESS, EGRESS):
            raise ValidationError(f"policy type must be Ingress or Egress, got {t!r}", f"{ws}.policyTypes[{i}]")
    if len(set(types)) != len(types):
        raise ValidationError("duplicate policy type", f"{ws}.policyTypes")
    ingress = _parse_rules(spec.get("ingress"), namespace, "from", f"{ws}.ingress")
    egress = _parse_rules(spec.get("egress"), namespace, "to", f"{ws}.egress")
    return Policy(namespace, name, pod_selector, tuple(t for t in (INGRESS, EGRESS) if t in types),
                  ingress if INGRESS in types else (), egress if EGRESS in types else ())


def parse_namespace_labels(name: str, spec: Mapping[str, Any] | None) -> dict[str, str]:
    labels = parse_labels((spec or {}).get("labels"), f"Namespace {name}: labels")
    labels.setdefault(NAMESPACE_NAME_LABEL, name)
    return labels


def parse_pod(key: str, spec: Mapping[str, Any]) -> Pod:
    """A stored Pod object ("ns/name" -> {node, ip, labels, ports, interface}) -> Pod."""
    where = f"Pod {key}"
    namespace, sep, name = key.partition("/")
    if not sep:
        raise ValidationError("pod name must be namespace/name", where)
    ip = spec.get("ip")
    if ip:
        ip = _pod_ip(ip, where)
    labels = parse_labels(spec.get("labels"), f"{where}: labels")
    ports = []
    for i, p in enumerate(spec.get("ports") or []):
        w = f"{where}: ports[{i}]"
        _expect(p, dict, w, "a mapping with name, port, protocol")
        proto = p.get("protocol", "TCP")
        if proto not in PROTOCOLS:
            raise ValidationError(f"protocol must be TCP, UDP or SCTP, got {proto!r}", w)
        port = p.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValidationError(f"port must be 1-65535, got {port!r}", w)
        if p.get("name"):
            ports.append(ContainerPort(str(p["name"]), port, proto))
    iface = spec.get("interface") or ""
    if iface and not _IFACE.match(iface):
        raise ValidationError(f"invalid interface name {iface!r}", f"{where}: interface")
    return Pod(namespace, name, str(spec.get("node") or ""), ip or None, Labels(sorted(labels.items())),
               tuple(ports), iface)


_IPV4 = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(/32)?$")


def _pod_ip(ip: Any, where: str) -> str:
    m = _IPV4.match(ip) if isinstance(ip, str) else None
    if m and all(int(o) <= 255 and (o == "0" or not o.startswith("0")) for o in m.groups()[:4]):
        return ip[:-3] if m.group(5) else ip  # the common case, without ipaddress' cost
    try:
        return str(ipaddress.ip_interface(ip).ip)  # CNI may store "10.0.0.5/32"
    except ValueError:
        raise ValidationError(f"invalid ip {ip!r}", f"{where}: ip") from None


def _join(where: str, field: str) -> str:
    return f"{where}: {field}" if where else field
