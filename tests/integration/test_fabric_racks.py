"""Two racks, each with two FRR ToRs (eBGP, an AS per rack), three bgpnet agents: convergence across racks,
ECMP over both ToRs, import filtering, agent restart without losing a probe, MD5 mismatch, max-prefixes,
reload touching one peer only, and a ToR failing. One lab serves the module; tests run in order, least
destructive first (the last one takes a ToR down for good)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from bgpnet.datastore import base as kinds
from bgpnet.datastore.local import LocalDatastore
from bgpnet.lab.netns import wait_for
from bgpnet.lab.probe import tcp_probe
from tests.integration.fabric_helpers import (
    agent_alive,
    converged_lab,
    frr_established_count,
    next_hops,
    peer,
    reload,
    restart_agent,
    route,
    set_peer,
    since,
    status,
    udp_stream,
    wait_established,
)

RACKS = Path(__file__).resolve().parents[2] / "containerlab" / "racks.clab.yml"
PODS = {"r1n1": "10.244.1.1", "r1n2": "10.244.2.1", "r2n1": "10.244.3.1"}


@pytest.fixture(scope="module")
def lab():
    with converged_lab(RACKS, "rk", PODS) as lab:
        yield lab


def probe(lab, src, dst) -> tuple[bool, str]:
    return tcp_probe(lab.node(dst).netns, PODS[dst], lab.node(src).netns, PODS[src], port=8080)


def test_pods_reach_each_other_across_racks(lab):
    for src, dst in (("r1n1", "r2n1"), ("r2n1", "r1n2"), ("r1n2", "r1n1")):
        ok, text = probe(lab, src, dst)
        assert ok, f"{src} -> {dst}: {text}"
    # t1b enforces GTSM (ttl-security hops 1): its sessions being up proves the nodes send with TTL 255.
    # Inside the rack the mesh gives the direct route; across racks both ToRs
    assert next_hops(lab, "r1n1", "10.244.2.0/24") == {"10.1.0.12"}
    st = status(lab, "r1n1")
    assert {p["name"]: p["state"] for p in st["peers"]} == {"t1a": "established", "t1b": "established",
                                                           "r1n2": "established"}


def test_ecmp_route_over_both_tors(lab):
    assert next_hops(lab, "r1n1", "10.244.3.0/24") == {"10.1.0.2", "10.1.0.3"}, route(lab, "r1n1", "10.244.3.0/24")
    assert next_hops(lab, "r2n1", "10.244.1.0/24") == {"10.2.0.2", "10.2.0.3"}
    assert next_hops(lab, "r2n1", "10.244.2.0/24") == {"10.2.0.2", "10.2.0.3"}
    assert "10.244.3.0/24 via 10.1.0.2 | via 10.1.0.3" in status(lab, "r1n1")["routes"]


def test_junk_from_a_tor_is_filtered_and_counted(lab):
    t1a = peer(lab, "r1n1", "t1a")
    rejected = t1a["rejected"]
    assert "default route not accepted" in rejected["0.0.0.0/0"]
    assert "outside every IP pool" in rejected["192.168.77.0/24"]
    assert "more-specific of block 10.244.3.0/24" in rejected["10.244.3.192/27"]
    assert t1a["prefixes_accepted"] == 1 and t1a["prefixes_rejected"] == len(rejected) >= 3
    # the same prefixes reached r2n1 through t2a: the more-specific of its own block is refused too
    assert "more-specific of this node's prefix" in peer(lab, "r2n1", "t2a")["rejected"]["10.244.3.192/27"]
    installed = lab.exec("r1n1", "ip", "route", "show")
    assert "default" not in installed and "192.168.77.0" not in installed and "10.244.3.192" not in installed
    metrics = lab.exec("r1n1", "curl", "-sf", "http://127.0.0.1:9645/metrics")
    line = next(x for x in metrics.splitlines() if x.startswith("bgpnet_peer_prefixes_rejected") and "t1a" in x)
    assert float(line.split()[-1]) == t1a["prefixes_rejected"]


def test_pool_communities_are_exported_with_the_nodes_blocks(lab):
    store = LocalDatastore(lab.dir / "datastore" / "store.db")
    store.put(kinds.IP_POOL, "rack-pods", {"cidr": "10.244.0.0/16", "communities": ["64601:100"],
                                           "large_communities": ["64601:1:2"]})

    def seen_by_t1a():
        data = lab.frr("t1a").vtysh_json("show bgp ipv4 unicast 10.244.1.0/24 json")
        return [(p.get("community", {}).get("string"), p.get("largeCommunity", {}).get("string"))
                for p in data.get("paths", [])]
    wait_for(lambda: ("64601:100", "64601:1:2") in seen_by_t1a(), timeout=30,
             what="t1a to receive r1n1's block with the pool's communities")
    # the pool also joins the import rules: the junk stays rejected, the blocks stay accepted
    assert "10.244.3.192/27" in peer(lab, "r2n1", "t2a")["rejected"]
    assert next_hops(lab, "r1n1", "10.244.3.0/24") == {"10.1.0.2", "10.1.0.3"}


def test_agent_restart_loses_no_probe_and_keeps_routes(lab):
    """SIGUSR2 (exit for restart), 2 s down, start again: the kernel keeps r1n1's routes, the ToRs keep
    r1n1's block as graceful-restart stale, and a 50/s UDP stream between pods across racks loses nothing."""
    stale_seen, routes_seen = [], []

    def while_down():
        routes_seen.append(route(lab, "r1n1", "10.244.3.0/24"))
        stale_seen.append(_t1a_path_of_r1n1(lab))
        if not agent_alive(lab, "r1n1") and not route(lab, "r1n1", "10.244.99.0/24"):
            # a route of ours nobody announces any more: the next agent must sweep it, and only it
            lab.exec("r1n1", "ip", "route", "add", "10.244.99.0/24", "via", "10.1.0.2", "proto", "201")

    with udp_stream(lab, "r1n1", PODS["r1n1"], "r2n1", PODS["r2n1"]) as result:
        time.sleep(0.5)
        restart_agent(lab, "r1n1", signal.SIGUSR2, pause=2.0, during=while_down)
        wait_established(lab, "r1n1")
        wait_for(lambda: status(lab, "r1n1")["in_sync"], timeout=30, what="r1n1 in sync after the restart")
        wait_for(lambda: route(lab, "r1n1", "10.244.99.0/24") == "", timeout=20, what="the stale route swept")
        wait_for(lambda: _t1a_path_of_r1n1(lab) == "valid", timeout=30, what="t1a to take r1n1's fresh path")
        time.sleep(0.5)
    assert result["sent"] > 100, result
    assert result["lost_count"] == 0, f"lost {result['lost_count']} of {result['sent']} probes: {result}"
    assert routes_seen and all("nexthop via 10.1.0.2" in r and "nexthop via 10.1.0.3" in r for r in routes_seen)
    assert "stale" in stale_seen, f"t1a never held r1n1's block as stale while its agent was down: {stale_seen}"
    assert None not in stale_seen


def _t1a_path_of_r1n1(lab) -> str | None:
    data = lab.frr("t1a").vtysh_json("show bgp ipv4 unicast 10.244.1.0/24 json")
    paths = data.get("paths", [])
    if not paths:
        return None
    return "stale" if any(p.get("stale") for p in paths) else "valid"


def test_md5_mismatch_keeps_session_down_status_says_why_and_reload_spares_other_peers(lab):
    wrong = lab.dir / "r2n1-wrong.password"
    wrong.write_text("not-the-password\n")
    good = "/etc/bgpnet/t2b.password"
    good_host = lab.node("r2n1").host_path(good)
    t2a_since, t2a_count = since(lab, "r2n1", "t2a"), frr_established_count(lab, "t2a", "10.2.0.11")
    reload(lab, "r2n1", lambda text: text.replace(good_host, str(wrong)))
    wait_for(lambda: peer(lab, "r2n1", "t2b")["state"] != "established", timeout=20, what="t2b session reset")
    wait_for(lambda: "TCP MD5" in peer(lab, "r2n1", "t2b")["last_error"], timeout=30,
             what="status to explain the MD5 problem")
    t2b = peer(lab, "r2n1", "t2b")
    assert "check that both sides use the same password" in t2b["last_error"]
    for f in ("status.json", "agent.log", "exabgp.log"):  # passwords never printed
        text = (lab.node("r2n1").run_dir / f).read_text()
        assert "not-the-password" not in text and "fabric-md5-secret" not in text, f
    assert lab.frr("t2b").vtysh_json("show bgp summary json")["ipv4Unicast"]["peers"].get(
        "10.2.0.11", {}).get("state", "Idle") != "Established"
    # the other ToR's session was not touched by either reload
    reload(lab, "r2n1", lambda text: text.replace(str(wrong), good_host))
    wait_for(lambda: peer(lab, "r2n1", "t2b")["state"] == "established", timeout=60, what="t2b back")
    assert since(lab, "r2n1", "t2a") == t2a_since
    assert frr_established_count(lab, "t2a", "10.2.0.11") == t2a_count
    wait_for(lambda: next_hops(lab, "r2n1", "10.244.1.0/24") == {"10.2.0.2", "10.2.0.3"}, timeout=30,
             what="ECMP back on r2n1")


def test_max_prefixes_reject_then_teardown(lab):
    t2a_since = since(lab, "r2n1", "t2a")
    reload(lab, "r2n1", set_peer("t2a", max_prefixes=1))
    wait_for(lambda: peer(lab, "r2n1", "t2a")["prefixes_accepted"] == 1, timeout=20, what="t2a capped at 1")
    p = peer(lab, "r2n1", "t2a")
    assert any("max-prefixes limit 1 reached" in r for r in p["rejected"].values()), p["rejected"]
    assert p["state"] == "established" and p["since"] == t2a_since  # `reject` keeps the session
    # r1n1's and r1n2's blocks: one still over both ToRs, the one over the limit through t2b only
    assert sorted(len(next_hops(lab, "r2n1", b)) for b in ("10.244.1.0/24", "10.244.2.0/24")) == [1, 2]

    reload(lab, "r2n1", set_peer("t2a", max_prefixes_action="teardown", max_prefixes_restart=600))
    wait_for(lambda: peer(lab, "r2n1", "t2a")["state"] == "held-down", timeout=20, what="t2a torn down")
    assert "more than max_prefixes 1" in peer(lab, "r2n1", "t2a")["last_error"]
    wait_for(lambda: lab.frr("t2a").vtysh_json("show bgp summary json")["ipv4Unicast"]["peers"].get(
        "10.2.0.11", {}).get("state") != "Established", timeout=20, what="t2a to see the session closed")
    time.sleep(3)  # held down: it does not come back and flap
    assert peer(lab, "r2n1", "t2a")["state"] == "held-down"
    wait_for(lambda: next_hops(lab, "r2n1", "10.244.1.0/24") == {"10.2.0.3"}, timeout=20,
             what="r2n1 to route over t2b only")
    ok, text = probe(lab, "r2n1", "r1n1")
    assert ok, text

    # a reload (the operator fixed the limit) lifts the hold-down before its 600 s are over
    reload(lab, "r2n1", set_peer("t2a", max_prefixes=None, max_prefixes_action=None, max_prefixes_restart=None))
    wait_established(lab, "r2n1")
    wait_for(lambda: next_hops(lab, "r2n1", "10.244.1.0/24") == {"10.2.0.2", "10.2.0.3"}, timeout=30,
             what="ECMP back on r2n1")


def test_one_tor_down_keeps_traffic_on_the_other(lab):
    with udp_stream(lab, "r1n1", PODS["r1n1"], "r2n1", PODS["r2n1"]) as result:
        time.sleep(0.5)
        for dev in ("eth1", "eth2"):
            lab.exec("t1a", "ip", "link", "set", dev, "down")
        wait_for(lambda: next_hops(lab, "r1n1", "10.244.3.0/24") == {"10.1.0.3"}, timeout=30,
                 what="r1n1 to route rack 2 over t1b only")
        wait_for(lambda: next_hops(lab, "r2n1", "10.244.1.0/24") == {"10.2.0.3"}, timeout=30,
                 what="r2n1 to route r1n1's block over t2b only")
        time.sleep(1.0)
    assert result["answered"] > 0
    assert peer(lab, "r1n1", "t1a")["state"] != "established"
    ok, text = probe(lab, "r1n1", "r2n1")
    assert ok, text
    ok, text = probe(lab, "r2n1", "r1n2")
    assert ok, text
    print(f"ToR t1a down: {result['lost_count']} of {result['sent']} probes lost "
          f"(longest gap {result['longest_gap'] * result['interval']:.2f}s, the hold time bounds it)")
