"""Hand-packed route messages: byte for byte what pyroute2 encodes for the same route; acks and dumps parse."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv4Network

import pytest
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from bgpnet.ipip import netlink as nl
from bgpnet.model import NextHop, Route

N = IPv4Network
A = IPv4Address
IFINDEX = {"tunl0": 3, "vxlan.bgpnet": 9}


def pyroute2_bytes(msg_type, flags, seq, dst_len, table, scope, rtype, rflags, attrs) -> bytes:
    m = rtmsg()
    m["header"].update({"type": msg_type, "flags": flags, "sequence_number": seq, "pid": 0})
    m.update(
        {
            "family": 2,
            "dst_len": dst_len,
            "table": table,
            "proto": 201,
            "scope": scope,
            "type": rtype,
            "flags": rflags,
        }
    )
    m["attrs"] = attrs
    m.encode()
    return bytes(m.data)


NEW = nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_CREATE | nl.NLM_F_REPLACE
CASES = [
    (
        "replace",
        Route(N("10.244.1.0/26"), kind="blackhole"),
        (24, NEW, 26, 254, 0, 6, 0, [("RTA_DST", "10.244.1.0"), ("RTA_TABLE", 254)]),
    ),
    (
        "replace",
        Route(N("10.244.2.0/26"), (NextHop(A("192.168.1.11")),)),
        (
            24,
            NEW,
            26,
            254,
            0,
            1,
            0,
            [("RTA_DST", "10.244.2.0"), ("RTA_TABLE", 254), ("RTA_GATEWAY", "192.168.1.11")],
        ),
    ),
    (
        "replace",
        Route(N("10.244.3.7/32"), (NextHop(A("10.0.0.5"), "tunl0", True),)),
        (
            24,
            NEW,
            32,
            254,
            0,
            1,
            4,
            [("RTA_DST", "10.244.3.7"), ("RTA_TABLE", 254), ("RTA_GATEWAY", "10.0.0.5"), ("RTA_OIF", 3)],
        ),
    ),
    (
        "replace",
        Route(
            N("10.244.4.0/26"),
            (NextHop(A("10.0.0.5"), "tunl0", True), NextHop(A("192.168.1.12"))),
        ),
        (
            24,
            NEW,
            26,
            254,
            0,
            1,
            0,
            [
                ("RTA_DST", "10.244.4.0"),
                ("RTA_TABLE", 254),
                (
                    "RTA_MULTIPATH",
                    [
                        {"flags": 4, "hops": 0, "oif": 3, "attrs": [("RTA_GATEWAY", "10.0.0.5")]},
                        {"flags": 0, "hops": 0, "oif": 0, "attrs": [("RTA_GATEWAY", "192.168.1.12")]},
                    ],
                ),
            ],
        ),
    ),
    (
        "replace",
        Route(N("10.244.5.0/26"), (NextHop(A("10.244.9.0"), "vxlan.bgpnet", True),), table=100),
        (
            24,
            NEW,
            26,
            100,
            0,
            1,
            4,
            [("RTA_DST", "10.244.5.0"), ("RTA_TABLE", 100), ("RTA_GATEWAY", "10.244.9.0"), ("RTA_OIF", 9)],
        ),
    ),
    (
        "delete",
        Route(N("10.244.2.0/26"), (NextHop(A("192.168.1.11")),)),
        (
            25,
            nl.NLM_F_REQUEST | nl.NLM_F_ACK,
            26,
            254,
            255,
            0,
            0,
            [("RTA_DST", "10.244.2.0"), ("RTA_TABLE", 254)],
        ),
    ),
]


@pytest.mark.parametrize(
    ("op", "route", "expected"), CASES, ids=lambda x: x.describe() if isinstance(x, Route) else None
)
def test_pack_route_matches_pyroute2_byte_for_byte(op, route, expected):
    table = route.table
    packed = nl.pack_route(op, route, 4242, 201, table, IFINDEX.__getitem__)
    msg_type, flags, dst_len, tbl, scope, rtype, rflags, attrs = expected
    assert packed == pyroute2_bytes(msg_type, flags, 4242, dst_len, tbl, scope, rtype, rflags, attrs)
    # and pyroute2 decodes it back to the same fields
    decoded = rtmsg(packed)
    decoded.decode()
    assert decoded["header"]["sequence_number"] == 4242
    assert decoded.get_attr("RTA_DST") == str(route.dst.network_address)
    assert decoded["proto"] == 201


def test_big_table_numbers_go_in_the_attribute_only():
    packed = nl.pack_route(
        "replace", Route(N("10.0.0.0/8"), kind="blackhole"), 1, 201, 1000, IFINDEX.__getitem__
    )
    decoded = rtmsg(packed)
    decoded.decode()
    assert decoded["table"] == 0 and decoded.get_attr("RTA_TABLE") == 1000


def test_unknown_device_and_missing_next_hops_raise_lookup_error():
    with pytest.raises(LookupError):
        nl.pack_route(
            "replace",
            Route(N("10.0.0.0/8"), (NextHop(A("1.2.3.4"), "nope", True),)),
            1,
            201,
            254,
            IFINDEX.__getitem__,
        )
    with pytest.raises(LookupError, match="without next hops"):
        nl.pack_route("replace", Route(N("10.0.0.0/8")), 1, 201, 254, IFINDEX.__getitem__)


def error_message(seq: int, err: int, text: str | None) -> bytes:
    echoed = nl.NLMSGHDR.pack(40, 24, 5, seq, 0)
    tlv = b""
    flags = 0
    if text:
        payload = text.encode() + b"\0"
        tlv = nl._attr(nl.NLMSGERR_ATTR_MSG, payload)
        flags = nl.NLM_F_ACK_TLVS
    body = struct.pack("=i", err) + echoed + tlv
    return nl.NLMSGHDR.pack(16 + len(body), nl.NLMSG_ERROR, flags, seq, 0) + body


def test_error_parsing_with_extended_ack_text():
    data = memoryview(error_message(5, -101, "Nexthop has invalid gateway"))
    assert nl._parse_error(data, 0, len(data), nl.NLM_F_ACK_TLVS) == (
        101,
        "Network is unreachable: Nexthop has invalid gateway",
    )
    plain = memoryview(error_message(6, 0, None))
    assert nl._parse_error(plain, 0, len(plain), 0) == (0, "")


@pytest.mark.parametrize(("op", "route"), [(op, route) for op, route, _ in CASES],
                         ids=lambda x: x.describe() if isinstance(x, Route) else None)
def test_route_packer_packs_what_pack_route_packs(op, route):
    """The packer reuses the parts of a first message for later routes of the same shape."""
    packer = nl.RoutePacker(201, route.table, IFINDEX.__getitem__)
    others = [Route(N(f"10.{i}.{j}.0/{route.dst.prefixlen}"), route.nexthops, route.kind, route.table)
              for i, j in ((1, 0), (200, 64), (7, 128))]
    for seq, r in enumerate([route, *others], start=10):
        assert packer.pack(op, r, seq) == nl.pack_route(op, r, seq, 201, route.table, IFINDEX.__getitem__)


def test_route_packer_keeps_failing_for_an_unknown_device():
    packer = nl.RoutePacker(201, 254, IFINDEX.__getitem__)
    bad = Route(N("10.0.0.0/8"), (NextHop(A("1.2.3.4"), "nope", True),))
    for _ in range(2):
        with pytest.raises(LookupError):
            packer.pack("replace", bad, 1)
