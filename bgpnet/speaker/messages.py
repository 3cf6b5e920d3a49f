"""Parse ExaBGP 5 JSON API lines into speaker events (pure). Golden inputs: tests/fixtures/exabgp/."""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from bgpnet.model import Path, PathAttributes, Prefix


class MessageError(ValueError):
    """An ExaBGP API line we cannot understand; the message names what is wrong."""


@dataclass(frozen=True)
class PeerUp:
    peer: IPv4Address
    peer_asn: int


@dataclass(frozen=True)
class PeerDown:
    """The session ended. `notification` is True when a NOTIFICATION was sent or received (a deliberate
    close); False for a bare TCP close: a peer killed, its link gone, or a peer that stopped silently
    (ExaBGP itself closes without NOTIFICATION on SIGTERM, and on any teardown when graceful restart is on)."""

    peer: IPv4Address
    reason: str
    notification: bool


@dataclass(frozen=True)
class Update:
    peer: IPv4Address
    announced: tuple[Path, ...] = ()
    withdrawn: tuple[IPv4Network, ...] = ()


@dataclass(frozen=True)
class EndOfRib:
    peer: IPv4Address


@dataclass(frozen=True)
class Notification:
    peer: IPv4Address
    code: int
    subcode: int
    reason: str


@dataclass(frozen=True)
class SpeakerShutdown:
    """ExaBGP went away (it said so, or its process ended)."""


Event = PeerUp | PeerDown | Update | EndOfRib | Notification | SpeakerShutdown

FAMILY = "ipv4 unicast"
ACKS = frozenset({"done", "error"})


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict):
        raise MessageError(f"{where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise MessageError(f"{where}: missing {key!r}")
    value = obj[key]
    # bool is an int in Python, but never a valid AS number or code here
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
        raise MessageError(f"{where}.{key}: expected {_names(kind)}, got {type(value).__name__} {value!r:.60}")
    return value


def _tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def _names(kind) -> str:
    return "|".join(k.__name__ for k in _tuple(kind))


def _ip(value: Any, where: str) -> IPv4Address:
    try:
        return IPv4Address(value)
    except ValueError as e:
        raise MessageError(f"{where}: not an IPv4 address: {value!r:.60}") from e


def _net(value: Any, where: str) -> Prefix:
    try:
        return Prefix.parse(value)
    except (ValueError, TypeError, AttributeError) as e:
        raise MessageError(f"{where}: not an IPv4 prefix: {value!r:.60}") from e


def _nlri(items: Any, where: str) -> list[Prefix]:
    """The prefixes of an ExaBGP NLRI list [{"nlri": "a.b.c.d/len"}, ...]."""
    if not isinstance(items, list):
        raise MessageError(f"{where}: expected a list of NLRI, got {type(items).__name__}")
    parse = Prefix.parse
    try:
        return [parse(item["nlri"]) for item in items]
    except (ValueError, TypeError, KeyError, AttributeError):
        pass  # find the culprit, slowly, for the message
    for item in items:
        _net(_get(item, "nlri", str, where), where)
    raise AssertionError("unreachable")  # pragma: no cover


def _as_path(attrs: dict, where: str) -> tuple[int, ...]:
    """Flatten AS_SEQUENCE segments; an AS_SET counts as one hop (RFC 4271 9.1.2.2)."""
    raw = attrs.get("as-path")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise MessageError(f"{where}.as-path: expected an object of segments, got {type(raw).__name__}")
    hops: list[int] = []
    for key in sorted(raw, key=lambda k: int(k) if str(k).isdigit() else 0):
        seg = raw[key]
        seg_where = f"{where}.as-path.{key}"
        element = _get(seg, "element", str, seg_where)
        values = _get(seg, "value", list, seg_where)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise MessageError(f"{seg_where}.value: expected AS numbers, got {values!r:.60}")
        if element == "as-sequence":
            hops.extend(values)
        elif element in ("as-set", "confed-sequence", "confed-set"):
            if element == "as-set" and values:
                hops.append(min(values))  # one hop; the member is irrelevant to path length
        else:
            raise MessageError(f"{seg_where}.element: unknown segment type {element!r}")
    return tuple(hops)


def _communities(attrs: dict, key: str, size: int, where: str) -> tuple[str, ...]:
    raw = attrs.get(key, [])
    if not isinstance(raw, list):
        raise MessageError(f"{where}.{key}: expected a list, got {type(raw).__name__}")
    out = []
    for c in raw:
        if not (isinstance(c, list) and len(c) == size and all(isinstance(x, int) for x in c)):
            raise MessageError(f"{where}.{key}: expected lists of {size} integers, got {c!r:.60}")
        out.append(":".join(str(x) for x in c))
    return tuple(out)


def _cluster_list(attrs: dict, where: str) -> tuple[IPv4Address, ...]:
    raw = attrs.get("cluster-list", [])
    if isinstance(raw, str):  # tolerate a single id
        raw = [raw]
    if not isinstance(raw, list):
        raise MessageError(f"{where}.cluster-list: expected a list, got {type(raw).__name__}")
    return tuple(_ip(c, f"{where}.cluster-list") for c in raw)


def _int_attr(attrs: dict, key: str, default: int, where: str) -> int:
    value = attrs.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MessageError(f"{where}.{key}: expected a non-negative integer, got {value!r:.60}")
    return value


def _family(section: Any, kind: type, what: str, where: str) -> Any:
    """The ipv4 unicast part of an announce/withdraw section; None when the update is for other families."""
    if not isinstance(section, dict):
        raise MessageError(f"{where}: expected a family -> {what} map, got {type(section).__name__}")
    family = section.get(FAMILY)
    if family is not None and not isinstance(family, kind):
        raise MessageError(f"{where}.{FAMILY}: expected {what}, got {type(family).__name__}")
    return family


def _paths(announce: Any, attrs: dict, peer: IPv4Address, peer_asn: int, ibgp: bool, where: str) -> list[Path]:
    family = _family(announce, dict, "next hop -> NLRI list", where)
    if family is None:
        return []
    origin = attrs.get("origin", "igp")
    if origin not in ("igp", "egp", "incomplete"):
        raise MessageError(f"{where}.attribute.origin: unknown origin {origin!r:.60}")
    common = dict(
        peer=peer,
        peer_asn=peer_asn,
        as_path=_as_path(attrs, f"{where}.attribute"),
        local_pref=_int_attr(attrs, "local-preference", 100, f"{where}.attribute"),
        med=_int_attr(attrs, "med", 0, f"{where}.attribute"),
        origin=origin,
        communities=_communities(attrs, "community", 2, f"{where}.attribute"),
        large_communities=_communities(attrs, "large-community", 3, f"{where}.attribute"),
        ibgp=ibgp,
        originator_id=_ip(attrs["originator-id"], f"{where}.attribute.originator-id")
        if "originator-id" in attrs else None,
        cluster_list=_cluster_list(attrs, f"{where}.attribute"),
    )
    paths = []
    of = Path.of
    for next_hop, nlris in family.items():
        nh_where = f"{where}.{FAMILY}.{next_hop}"
        attributes = PathAttributes(next_hop=_ip(next_hop, nh_where), **common)
        paths += [of(prefix, attributes) for prefix in _nlri(nlris, nh_where)]
    return paths


def _withdrawn(withdraw: Any, where: str) -> list[IPv4Network]:
    family = _family(withdraw, list, "NLRI list", where)
    if family is None:
        return []
    return _nlri(family, f"{where}.{FAMILY}")


def _notified(reason: str) -> bool:
    # ExaBGP's own wording (reactor/peer.py): "notification sent (6,2)" / "notification received (6,2)"
    return reason.startswith(("notification sent", "notification received"))


def parse_message(line: str) -> list[Event]:
    """Turn one ExaBGP API line into events; acks and other families give []."""
    text = line.strip()
    if not text or text in ACKS:
        return []
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as e:
        raise MessageError(f"not JSON ({e.msg} at column {e.colno}): {text[:80]!r}") from None
    if not isinstance(msg, dict):
        raise MessageError(f"expected a JSON object, got {type(msg).__name__}: {text[:80]!r}")
    kind = _get(msg, "type", str, "message")

    if kind == "notification" and isinstance(msg.get("notification"), str):
        # process-level notice, not a BGP NOTIFICATION: {"type": "notification", "notification": "shutdown"}
        return [SpeakerShutdown()] if msg["notification"] == "shutdown" else []
    if kind not in ("state", "update", "notification"):
        return []  # open, keepalive, refresh, operational, signal ...: not subscribed, not needed

    neighbor = _get(msg, "neighbor", dict, "message")
    address = _get(neighbor, "address", dict, "neighbor")
    peer = _ip(_get(address, "peer", str, "neighbor.address"), "neighbor.address.peer")
    asn = _get(neighbor, "asn", dict, "neighbor")
    peer_asn = _get(asn, "peer", int, "neighbor.asn")
    local_asn = _get(asn, "local", int, "neighbor.asn")

    if kind == "state":
        state = _get(neighbor, "state", str, "neighbor")
        if state == "up":
            return [PeerUp(peer, peer_asn)]
        if state == "down":
            reason = neighbor.get("reason", "")
            if not isinstance(reason, str):
                raise MessageError(f"neighbor.reason: expected a string, got {type(reason).__name__}")
            return [PeerDown(peer, reason, _notified(reason))]
        return []  # connected: TCP is up, the session is not

    if kind == "notification":
        n = _get(neighbor, "notification", dict, "neighbor")
        return [
            Notification(
                peer,
                _get(n, "code", int, "neighbor.notification"),
                _get(n, "subcode", int, "neighbor.notification"),
                str(n.get("message", "")),
            )
        ]

    message = _get(neighbor, "message", dict, "neighbor")
    if "eor" in message:
        eor = _get(message, "eor", dict, "neighbor.message")
        if f"{eor.get('afi')} {eor.get('safi')}" != FAMILY:
            return []
        return [EndOfRib(peer)]
    update = _get(message, "update", dict, "neighbor.message")
    attrs = update.get("attribute", {})
    if not isinstance(attrs, dict):
        raise MessageError(f"update.attribute: expected an object, got {type(attrs).__name__}")
    announced = _paths(update.get("announce", {}), attrs, peer, peer_asn, peer_asn == local_asn, "update.announce")
    withdrawn = _withdrawn(update.get("withdraw", {}), "update.withdraw")
    if not announced and not withdrawn:
        return []
    return [Update(peer, tuple(announced), tuple(withdrawn))]
