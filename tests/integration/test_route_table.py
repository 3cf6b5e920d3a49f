"""RouteTable against a real kernel routing table in a namespace: apply, read back, repair, leave others alone."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from bgpnet import RTPROT_BGPNET
from bgpnet.ipip.kernel import RouteTable
from bgpnet.model import NextHop, Route

N = IPv4Network
A = IPv4Address


@pytest.fixture(params=["bulk", "pyroute2"])
def table_opts(request) -> dict:
    """Every test runs against both write paths: hand-packed netlink batches and pyroute2 one by one."""
    return {"bulk_threshold": 0 if request.param == "bulk" else 10**9}


@pytest.fixture
def node(netns_factory):
    """A namespace with eth1 on 192.168.1.0/24 (peer at .11 and .12 in another namespace) and a second
    device `tun1` (a veth end, up) to stand in for a tunnel device with onlink routes."""
    ns = netns_factory("node")
    peer = netns_factory("peer")
    from bgpnet.lab.netns import veth

    veth(ns, "eth1", peer, "eth1")
    veth(ns, "tun1", peer, "tun1")
    ns.run("ip", "addr", "add", "192.168.1.10/24", "dev", "eth1")
    return ns


def routes_text(ns) -> str:
    return ns.run("ip", "route", "show", "proto", str(RTPROT_BGPNET))


def desired_set() -> set[Route]:
    return {
        Route(N("10.244.1.0/26"), kind="blackhole"),
        Route(N("10.244.2.0/26"), (NextHop(A("192.168.1.11")),)),
        Route(N("10.244.3.0/26"), (NextHop(A("192.168.1.11")), NextHop(A("192.168.1.12")))),
        Route(N("10.244.4.0/26"), (NextHop(A("10.0.0.5"), "tun1", True),)),
        Route(
            N("10.244.5.0/26"), (NextHop(A("10.0.0.5"), "tun1", True), NextHop(A("10.0.1.5"), "tun1", True))
        ),
    }


def test_apply_read_back_repair_and_remove(node, table_opts):
    with RouteTable(netns=node.name, **table_opts) as rt:
        want = desired_set()
        res = rt.apply(want)
        assert res.ok, res.summary()
        assert res.added == len(want)
        assert rt.read() == want
        text = routes_text(node)
        assert "blackhole 10.244.1.0/26" in text
        assert "10.244.4.0/26 via 10.0.0.5 dev tun1" in text and "onlink" in text
        assert "nexthop via 192.168.1.11" in text and "nexthop via 192.168.1.12" in text

        # idempotent
        again = rt.apply(want)
        assert (again.added, again.replaced, again.removed, again.unchanged) == (0, 0, 0, len(want))

        # drift repaired: a route deleted by hand comes back; a changed one is replaced
        node.run("ip", "route", "del", "10.244.2.0/26")
        node.run(
            "ip", "route", "replace", "10.244.4.0/26", "via", "192.168.1.12", "proto", str(RTPROT_BGPNET)
        )
        fix = rt.apply(want)
        assert fix.ok and fix.added == 1 and fix.replaced == 1, fix.summary()
        assert rt.read() == want

        # unwanted routes of ours are removed
        smaller = {r for r in want if r.dst != N("10.244.3.0/26")}
        res = rt.apply(smaller)
        assert res.removed == 1 and res.ok
        assert "10.244.3.0/26" not in routes_text(node)
        assert rt.read() == smaller

        # and everything goes when nothing is wanted
        assert rt.apply(set()).removed == len(smaller)
        assert routes_text(node).strip() == ""


def test_routes_of_other_protocols_are_left_alone(node, table_opts):
    node.run("ip", "route", "add", "10.99.0.0/24", "via", "192.168.1.12", "proto", "static")
    node.run("ip", "route", "add", "10.244.7.0/26", "via", "192.168.1.12", "proto", "bird")
    with RouteTable(netns=node.name, **table_opts) as rt:
        want = {
            Route(N("10.244.2.0/26"), (NextHop(A("192.168.1.11")),)),
            Route(N("10.244.7.0/26"), (NextHop(A("192.168.1.11")),)),  # held by BIRD's route
        }
        res = rt.apply(want)
        assert res.added == 1
        assert [(r.dst, "another protocol" in e) for r, e in res.errors] == [(N("10.244.7.0/26"), True)]
        assert rt.read() == {Route(N("10.244.2.0/26"), (NextHop(A("192.168.1.11")),))}
        rt.apply(set())
    text = node.run("ip", "route", "show")
    assert "10.99.0.0/24 via 192.168.1.12" in text and "proto static" in text
    assert "10.244.7.0/26 via 192.168.1.12" in text and "proto bird" in text


def test_failures_are_reported_per_route_and_the_rest_applied(node, table_opts):
    with RouteTable(netns=node.name, **table_opts) as rt:
        good = Route(N("10.244.2.0/26"), (NextHop(A("192.168.1.11")),))
        unreachable = Route(N("10.244.8.0/26"), (NextHop(A("172.31.0.1")),))  # no connected route
        no_dev = Route(N("10.244.9.0/26"), (NextHop(A("10.0.0.5"), "tunl-none", True),))
        res = rt.apply({good, unreachable, no_dev})
        assert res.added == 1 and res.failed == 2, res.summary()
        errors = dict(res.errors)
        assert "unreachable" in errors[unreachable].lower()
        assert "tunl-none" in errors[no_dev]
        assert rt.read() == {good}
        assert "failed" in res.summary()


def test_bulk_path_installs_exactly_the_desired_set_and_maps_errors_across_batches(node):
    """2,500 changes = three netlink batches; failing routes in each batch are reported by sequence number."""
    base = int(A("10.128.0.0"))
    good = {Route(N((base + i * 64, 26)), (NextHop(A("192.168.1.11")),)) for i in range(2497)}
    bad = {Route(N(f"10.{n}.0.0/24"), (NextHop(A("172.31.0.1")),)) for n in (7, 8, 9)}
    with RouteTable(netns=node.name, bulk_threshold=100) as rt:
        res = rt.apply(good | bad)
        assert res.added == len(good) and res.failed == 3, res.summary()
        assert {r for r, _ in res.errors} == bad
        assert all("ENETUNREACH" in e for _, e in res.errors)
        assert rt.read() == good
        assert len(routes_text(node).splitlines()) == len(good)
        # change half of them, keep the rest: only the difference is written
        moved = {Route(r.dst, (NextHop(A("192.168.1.12")),)) for r in list(good)[:1000]}
        kept = {r for r in good if r.dst not in {m.dst for m in moved}}
        res = rt.apply(moved | kept)
        assert (res.replaced, res.unchanged, res.removed, res.failed) == (1000, len(kept), 0, 0), (
            res.summary()
        )
        assert rt.read() == moved | kept
        assert rt.apply(set()).removed == len(good)
        assert routes_text(node).strip() == ""


def test_tables_are_separate(node, table_opts):
    ours_main = Route(N("10.244.2.0/26"), (NextHop(A("192.168.1.11")),))
    ours_100 = Route(N("10.244.3.0/26"), (NextHop(A("192.168.1.12")),), table=100)
    with (
        RouteTable(netns=node.name, **table_opts) as main,
        RouteTable(netns=node.name, table=100, **table_opts) as t100,
    ):
        assert main.apply({ours_main}).added == 1
        assert t100.apply({ours_100}).added == 1
        assert t100.read() == {ours_100} and main.read() == {ours_main}
        assert t100.apply(set()).removed == 1
        assert main.read() == {ours_main}
    assert "10.244.3.0/26" not in node.run("ip", "route", "show", "table", "100")


def test_two_routes_for_one_destination_change_nothing(node):
    with RouteTable(netns=node.name) as rt:
        a = Route(N("10.244.2.0/26"), (NextHop(A("192.168.1.11")),))
        b = Route(N("10.244.2.0/26"), (NextHop(A("192.168.1.12")),))
        c = Route(N("10.244.3.0/26"), kind="blackhole")
        with pytest.raises(ValueError, match="two desired routes for 10.244.2.0/26"):
            rt.apply([c, a, b])
        assert rt.read() == set()


def test_apply_changes_writes_only_the_delta_and_never_overwrites_others(node, table_opts):
    with RouteTable(netns=node.name, **table_opts) as rt:
        want = desired_set()
        assert rt.apply(want).ok
        ours = {r.dst for r in want}
        node.run("ip", "route", "add", "10.99.0.0/24", "via", "192.168.1.12", "proto", "static")
        node.run("ip", "route", "del", "10.244.2.0/26", "proto", str(RTPROT_BGPNET))  # drift: already gone
        new = Route(N("10.244.6.0/26"), (NextHop(A("192.168.1.12")),))
        moved = Route(N("10.244.3.0/26"), (NextHop(A("192.168.1.12")),))
        clash = Route(N("10.99.0.0/24"), (NextHop(A("192.168.1.11")),))
        res = rt.apply_changes([new, moved, clash], [N("10.244.2.0/26"), N("10.244.4.0/26")], ours)
        assert (res.added, res.replaced, res.removed) == (1, 1, 2), res.summary()
        assert [(r.dst, "another protocol" in err) for r, err in res.errors] == [(N("10.99.0.0/24"), True)]
        expected = (want - {r for r in want if r.dst in {N("10.244.2.0/26"), N("10.244.3.0/26"),
                                                         N("10.244.4.0/26")}}) | {new, moved}
        assert rt.read() == expected
        assert "10.99.0.0/24 via 192.168.1.12 dev eth1 proto static" in node.run("ip", "route", "show")


def test_bulk_writer_reports_failures_first_last_and_whole_batches(node):
    """Only a batch's last message asks for an ack; failures anywhere, that last one included, and a batch
    where everything fails are still mapped to their own changes."""
    from bgpnet.ipip.netlink import BulkWriter, open_socket

    def ok(n):
        return ("add", Route(N(f"10.200.{n}.0/24"), (NextHop(A("192.168.1.11")),)))

    def bad(n):
        return ("add", Route(N(f"10.201.{n}.0/24"), (NextHop(A("172.31.0.1")),)))  # no route to it

    # batches of 3: [ok ok BAD] [BAD ok ok] [BAD BAD BAD] [ok ok] ; a delete of a route that is not there
    changes = [ok(1), ok(2), bad(3), bad(4), ok(5), ok(6), bad(7), bad(8), bad(9), ok(10), ok(11),
               ("delete", Route(N("10.202.0.0/24"), kind="blackhole"))]
    with open_socket(node.name) as sock:
        writer = BulkWriter(sock)
        errors = writer.write(changes, RTPROT_BGPNET, 254, lambda dev: 1, batch=3)
        assert sorted(errors) == [2, 3, 6, 7, 8, 11]
        assert all("ENETUNREACH" in errors[i] for i in (2, 3, 6, 7, 8)) and "ESRCH" in errors[11]
        # the socket is clean for the next write: nothing stale is read as its answer
        assert writer.write([ok(12), bad(13)], RTPROT_BGPNET, 254, lambda dev: 1) == {1: errors[2]}
    listed = {line.split()[0] for line in routes_text(node).splitlines()}
    assert listed == {f"10.200.{n}.0/24" for n in (1, 2, 5, 6, 10, 11, 12)}
