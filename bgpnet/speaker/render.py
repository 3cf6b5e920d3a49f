"""Render ExaBGP 5 configuration text and process environment from neighbour definitions (pure)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from bgpnet.errors import ConfigError

PROCESS_NAME = "bgpnet"

# ExaBGP's tokeniser splits on whitespace and treats ; { } as syntax: such characters in a quoted
# value would silently truncate it, so they are refused up front.
_UNSAFE = re.compile(r'[\s;{}"\'\\]')


@dataclass(frozen=True)
class Neighbor:
    """One BGP peer as ExaBGP should see it."""

    address: IPv4Address
    peer_asn: int
    local_address: IPv4Address
    local_asn: int
    router_id: IPv4Address
    name: str = ""
    passive: bool = False
    hold_time: int = 90  # seconds; 0 disables keepalives
    port: int = 179  # the peer's TCP port we connect to
    md5_password: str | None = None
    multihop: int = 0  # outgoing TTL for eBGP multihop; 0 = ExaBGP default
    ttl_security: int = 0  # GTSM: the peer is at most this many hops away; 0 = off
    graceful_restart: int = 120  # seconds advertised in the GR capability; 0 = no capability
    # ExaBGP does not reflect routes (it keeps no loc-RIB to reflect from): the agent reflects (it
    # re-announces best paths per neighbour); these two are rendered as a comment only.
    route_reflector_client: bool = False
    cluster_id: IPv4Address | None = None

    @property
    def ibgp(self) -> bool:
        return self.peer_asn == self.local_asn

    def describe(self) -> str:
        return f"{self.name or 'peer'} {self.address} AS{self.peer_asn}"


def _check(n: Neighbor, where: str) -> None:
    for field_name in ("peer_asn", "local_asn"):
        asn = getattr(n, field_name)
        if not 1 <= asn <= 4294967295:
            raise ConfigError(f"{field_name} {asn} is not a valid AS number (1..4294967295)", where)
    if n.hold_time != 0 and not 3 <= n.hold_time <= 65535:
        raise ConfigError(f"hold_time {n.hold_time}s must be 0 or 3..65535", where)
    if not 1 <= n.port <= 65535:
        raise ConfigError(f"port {n.port} is not a TCP port", where)
    if not 0 <= n.multihop <= 255:
        raise ConfigError(f"multihop {n.multihop} must be a TTL 0..255", where)
    if not 0 <= n.ttl_security <= 254:
        raise ConfigError(f"ttl_security {n.ttl_security} must be 0..254 hops", where)
    if n.ttl_security and n.multihop:
        raise ConfigError("ttl_security and multihop exclude each other", where)
    if not 0 <= n.graceful_restart <= 4095:
        raise ConfigError(f"graceful_restart {n.graceful_restart}s must be 0..4095", where)
    if n.md5_password is not None:
        if not n.md5_password or len(n.md5_password) > 80:
            raise ConfigError("md5_password must be 1..80 characters", where)
        if _UNSAFE.search(n.md5_password):
            raise ConfigError("md5_password must not contain whitespace, quotes, backslash, ';', '{' or '}'", where)
    if n.name and _UNSAFE.search(n.name):
        raise ConfigError(f"name {n.name!r} must not contain whitespace, quotes or ExaBGP syntax characters", where)


def render_neighbor(n: Neighbor) -> str:
    where = f"neighbor {n.address}"
    _check(n, where)
    lines = [f"neighbor {n.address} {{"]
    if n.name:
        lines.append(f'    description "{n.name}";')
    lines += [
        f"    router-id {n.router_id};",
        f"    local-address {n.local_address};",
        f"    local-as {n.local_asn};",
        f"    peer-as {n.peer_asn};",
        f"    hold-time {n.hold_time};",
        f"    passive {'true' if n.passive else 'false'};",
    ]
    if n.port != 179:
        lines.append(f"    connect {n.port};")
    if n.md5_password:
        lines.append(f'    md5-password "{n.md5_password}";')
    if n.multihop:
        lines.append(f"    outgoing-ttl {n.multihop};")
    if n.ttl_security:
        # RFC 5082: send with TTL 255, accept only what cannot have come from further than `hops` away
        lines += ["    outgoing-ttl 255;", f"    incoming-ttl {256 - n.ttl_security};"]
    if n.route_reflector_client:
        cluster = f" cluster-id {n.cluster_id}" if n.cluster_id else ""
        lines.append(f"    # route-reflector-client{cluster} (ExaBGP does not reflect; see Neighbor)")
    # manual-eor: the speaker sends EOR itself after re-announcing on session up, so a graceful-restart
    # peer never sweeps our routes between ExaBGP's automatic EOR and our announcements.
    # adj-rib-in false: the agent keeps what each peer sent (adj_in); ExaBGP's own copy only costs
    # memory and ~10% of its CPU per received prefix (and turns on per-prefix route logging calls).
    lines += [
        "    manual-eor true;",
        "    adj-rib-in false;",
        "    capability {",
        f"        graceful-restart {n.graceful_restart};" if n.graceful_restart else "        graceful-restart disable;",
        "        route-refresh enable;",
        "    }",
        "    family {",
        "        ipv4 unicast;",
        "    }",
        "    api {",
        f"        processes [ {PROCESS_NAME} ];",
        "        neighbor-changes;",
        "        receive {",
        "            parsed;",
        "            update;",
        "            notification;",
        "        }",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_exabgp_config(neighbors: Sequence[Neighbor], relay_argv: Sequence[str]) -> str:
    """The whole ExaBGP configuration: one API process (the relay) and one block per neighbour."""
    seen: set[IPv4Address] = set()
    for n in neighbors:
        if n.address in seen:
            raise ConfigError(f"neighbor {n.address} is defined twice", "neighbors")
        seen.add(n.address)
    for arg in relay_argv:
        if not arg or _UNSAFE.search(arg):
            raise ConfigError(f"relay argument {arg!r} must be non-empty without whitespace or ExaBGP syntax", "relay")
    if not relay_argv or not relay_argv[0].startswith("/"):
        raise ConfigError("relay command must start with an absolute path (ExaBGP requires one)", "relay")
    out = [
        "# Rendered by bgpnet; do not edit (rewritten on every change).",
        f"process {PROCESS_NAME} {{",
        f"    run {' '.join(relay_argv)};",
        "    encoder json;",
        "}",
        "",
    ]
    for n in sorted(neighbors, key=lambda n: n.address):
        out.append(render_neighbor(n))
    return "\n".join(out)


def relay_argv(python: str, package_root: Path, socket_path: Path) -> list[str]:
    """How ExaBGP runs the relay: `env` carries PYTHONPATH so our package imports without installation."""
    return ["/usr/bin/env", f"PYTHONPATH={package_root}", python, "-m", "bgpnet.speaker.relay", str(socket_path)]


def exabgp_env(listen_address: IPv4Address | None, port: int, run_dir: Path) -> dict[str, str]:
    """Environment for the ExaBGP process (ExaBGP reads exabgp_<section>_<option> variables)."""
    return {
        # without a bind address ExaBGP never listens, so passive neighbours could not connect to us
        "exabgp_tcp_bind": str(listen_address) if listen_address else "",
        "exabgp_tcp_port": str(port),
        "exabgp_daemon_user": "root",
        "exabgp_daemon_drop": "false",
        "exabgp_daemon_daemonize": "false",
        "exabgp_daemon_pid": str(run_dir / "exabgp.pid"),
        "exabgp_api_cli": "false",
        "exabgp_api_encoder": "json",
        "exabgp_api_ack": "true",
        # the relay exits when the agent's socket goes away; ExaBGP restarts it and keeps sessions up
        "exabgp_api_respawn": "true",
        "exabgp_api_terminate": "false",
        "exabgp_log_destination": "stdout",
        "exabgp_log_level": "INFO",
        "exabgp_log_short": "true",
        "exabgp_log_packets": "false",
        "exabgp_log_routes": "false",
        "exabgp_log_configuration": "false",
        "exabgp_log_statistics": "false",  # a line per keepalive otherwise
        # The reactor's poll timeout when idle is speed/100 s: 10 ms by default, 100 wake-ups a second and
        # most of the idle CPU. Sockets and the API pipe wake it at once whatever the value; only timers
        # (keepalive, hold, connect retries) are checked this coarsely.
        "exabgp_reactor_speed": "5.0",
    }


# -- API commands (what the speaker writes to ExaBGP through the relay)

_COMMUNITY = re.compile(r"^\d{1,5}:\d{1,5}$")
_LARGE_COMMUNITY = re.compile(r"^\d{1,10}:\d{1,10}:\d{1,10}$")
# next_hop, origin, as_path, originator_id and cluster_list are for reflected paths (route reflector)
ROUTE_ATTRIBUTES = ("communities", "large_communities", "med", "local_pref", "next_hop", "origin", "as_path",
                    "originator_id", "cluster_list")
_ORIGINS = ("igp", "egp", "incomplete")


def _ipv4(value) -> bool:
    try:
        IPv4Address(value)
    except ValueError:
        return False
    return True


def check_route_attributes(attrs: dict, where: str) -> None:
    """Attributes we can attach to an exported route; anything else is refused by name."""
    for key, value in attrs.items():
        if key not in ROUTE_ATTRIBUTES:
            raise ConfigError(f"unknown route attribute {key!r} (known: {', '.join(ROUTE_ATTRIBUTES)})", where)
        if key in ("communities", "large_communities"):
            pattern = _COMMUNITY if key == "communities" else _LARGE_COMMUNITY
            if isinstance(value, str) or not all(isinstance(c, str) and pattern.match(c) for c in value):
                raise ConfigError(f"{key} must be a list like ['65000:100'], got {value!r}", where)
            if key == "communities" and any(int(x) > 65535 for c in value for x in c.split(":")):
                raise ConfigError(f"{key}: each half of a community is 0..65535, got {value!r}", where)
        elif key in ("next_hop", "originator_id"):
            if not _ipv4(value):
                raise ConfigError(f"{key} must be an IPv4 address, got {value!r}", where)
        elif key == "cluster_list":
            if isinstance(value, str) or not all(_ipv4(c) for c in value):
                raise ConfigError(f"{key} must be a list of IPv4 addresses, got {value!r}", where)
        elif key == "origin":
            if value not in _ORIGINS:
                raise ConfigError(f"origin must be one of {', '.join(_ORIGINS)}, got {value!r}", where)
        elif key == "as_path":
            if isinstance(value, str) or not all(isinstance(a, int) and not isinstance(a, bool)
                                                 and 1 <= a <= 4294967295 for a in value):
                raise ConfigError(f"as_path must be a list of AS numbers, got {value!r}", where)
        elif not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 4294967295:
            raise ConfigError(f"{key} must be an integer 0..4294967295, got {value!r}", where)


def announce_command(peer: IPv4Address, prefix, attrs: dict | None = None) -> str:
    attrs = attrs or {}
    check_route_attributes(attrs, f"route {prefix}")
    parts = [f"neighbor {peer} announce route {prefix} next-hop {attrs.get('next_hop') or 'self'}"]
    if "origin" in attrs:
        parts.append(f"origin {attrs['origin']}")
    if attrs.get("as_path"):
        parts.append(f"as-path [ {' '.join(map(str, attrs['as_path']))} ]")
    if "local_pref" in attrs:
        parts.append(f"local-preference {attrs['local_pref']}")
    if "med" in attrs:
        parts.append(f"med {attrs['med']}")
    if attrs.get("communities"):
        parts.append(f"community [ {' '.join(sorted(attrs['communities']))} ]")
    if attrs.get("large_communities"):
        parts.append(f"large-community [ {' '.join(sorted(attrs['large_communities']))} ]")
    if attrs.get("originator_id"):
        parts.append(f"originator-id {attrs['originator_id']}")
    if attrs.get("cluster_list"):
        parts.append(f"cluster-list [ {' '.join(map(str, attrs['cluster_list']))} ]")
    return " ".join(parts)


def withdraw_command(peer: IPv4Address, prefix) -> str:
    return f"neighbor {peer} withdraw route {prefix}"


def eor_command(peer: IPv4Address) -> str:
    return f"neighbor {peer} announce eor ipv4 unicast"


def teardown_command(peer: IPv4Address, subcode: int = 2) -> str:
    """Cease NOTIFICATION (subcode 2: administrative shutdown). Silent when graceful restart is on."""
    return f"neighbor {peer} teardown {subcode}"
