"""Route reflectors instead of a mesh (containerlab/rr.clab.yml): BIRD as an external route reflector and
a bgpnet node (n1) reflecting for the others. The clients reach each other through either reflector alone.
One lab serves the module; tests run in order (the later ones stop n1's agent, then BIRD)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from bgpnet.lab.netns import wait_for
from bgpnet.lab.probe import tcp_probe
from tests.integration.fabric_helpers import (
    converged_lab,
    next_hops,
    peer,
    restart_agent,
    start_agent,
    status,
    stop_agent,
    udp_stream,
)

RR = Path(__file__).resolve().parents[2] / "containerlab" / "rr.clab.yml"
PODS = {"n1": "10.244.1.1", "n2": "10.244.2.1", "n3": "10.244.3.1"}


@pytest.fixture(scope="module")
def lab():
    with converged_lab(RR, "rr", PODS) as lab:
        yield lab


def probe(lab, src, dst) -> tuple[bool, str]:
    return tcp_probe(lab.node(dst).netns, PODS[dst], lab.node(src).netns, PODS[src], port=8080)


def bird_route(lab, prefix: str) -> str:
    return lab.bird("rr").birdc(f"show route {prefix} all")


def test_clients_peer_only_with_the_reflectors_and_converge(lab):
    assert {p["name"] for p in status(lab, "n2")["peers"]} == {"n1", "bird-rr"}  # no session with n3
    assert {p["name"] for p in status(lab, "n3")["peers"]} == {"n1", "bird-rr"}
    n1 = status(lab, "n1")
    assert {p["name"]: p["route_reflector_client"] for p in n1["peers"]} == {"n2": True, "n3": True,
                                                                           "bird-rr": False}
    assert next_hops(lab, "n2", "10.244.3.0/24") == {"10.0.0.13"}  # next hop unchanged by reflection
    for src, dst in (("n2", "n3"), ("n3", "n1"), ("n1", "n2")):
        ok, text = probe(lab, src, dst)
        assert ok, f"{src} -> {dst}: {text}"


def test_bgpnet_reflector_sends_originator_id_and_cluster_list(lab):
    # n1 reflected n2's block to BIRD (a non-client iBGP peer) with RFC 4456 attributes
    text = bird_route(lab, "10.244.2.0/24")
    reflected = text[text.index("[n1 "):]
    assert "BGP.originator_id: 10.0.0.12" in reflected and "BGP.cluster_list: 1.1.1.1" in reflected, text
    assert "BGP.next_hop: 10.0.0.12" in reflected
    assert status(lab, "n1")["reflected"] == 4  # n2's block to n3 and BIRD, n3's to n2 and BIRD
    # n2 got n3's block from both reflectors
    assert peer(lab, "n2", "n1")["prefixes_accepted"] == 2 and peer(lab, "n2", "bird-rr")["prefixes_accepted"] == 2


def test_bird_alone_carries_the_clients_when_the_bgpnet_reflector_leaves(lab):
    stop_agent(lab, "n1", signal.SIGTERM)  # leaves: withdraws its own and its reflected routes
    wait_for(lambda: peer(lab, "n2", "n1")["state"] != "established", timeout=20, what="n2 to see n1 leave")
    wait_for(lambda: lab.exec("n2", "ip", "route", "show", "10.244.1.0/24", "proto", "201").strip() == "",
             timeout=20, what="n1's block withdrawn on n2")
    assert next_hops(lab, "n2", "10.244.3.0/24") == {"10.0.0.13"}
    ok, text = probe(lab, "n2", "n3")
    assert ok, text
    start_agent(lab, "n1")
    wait_for(lambda: peer(lab, "n2", "n1")["state"] == "established", timeout=60, what="n1 back")
    wait_for(lambda: peer(lab, "n2", "n1")["prefixes_accepted"] == 2, timeout=30, what="n1 reflecting again")


def test_bgpnet_reflector_alone_carries_the_clients_when_bird_stops(lab):
    bird = next(p for p in lab.node("rr").procs if p.alive())
    os.kill(bird.pid, signal.SIGTERM)  # BIRD closes its sessions with a Cease: their routes go at once
    for node in ("n2", "n3"):
        wait_for(lambda node=node: peer(lab, node, "bird-rr")["state"] != "established", timeout=20,
                 what=f"{node} to see BIRD stop")
        wait_for(lambda node=node: peer(lab, node, "bird-rr")["prefixes_accepted"] == 0, timeout=20,
                 what=f"{node} to drop BIRD's paths")
    assert next_hops(lab, "n2", "10.244.3.0/24") == {"10.0.0.13"}
    assert next_hops(lab, "n3", "10.244.2.0/24") == {"10.0.0.12"}
    for src, dst in (("n2", "n3"), ("n3", "n2"), ("n2", "n1")):
        ok, text = probe(lab, src, dst)
        assert ok, f"{src} -> {dst}: {text}"


def test_bgpnet_reflector_restart_loses_no_probe_between_its_clients(lab):
    """With BIRD gone, n2 reaches n3 only through n1's reflection. n1 restarts (SIGUSR2): the clients keep
    the reflected paths as graceful-restart stale, and the restarted n1 holds its End-of-RIB back until it
    has re-learned and re-reflected them, so nothing is swept in between."""
    assert peer(lab, "n2", "bird-rr")["state"] != "established"
    seen = []
    with udp_stream(lab, "n2", PODS["n2"], "n3", PODS["n3"]) as result:
        time.sleep(0.5)
        restart_agent(lab, "n1", signal.SIGUSR2, pause=1.0,
                      during=lambda: seen.append(next_hops(lab, "n2", "10.244.3.0/24")))
        wait_for(lambda: peer(lab, "n2", "n1")["state"] == "established", timeout=60, what="n1 back")
        wait_for(lambda: status(lab, "n1")["in_sync"], timeout=60, what="n1 in sync")
        wait_for(lambda: peer(lab, "n2", "n1")["prefixes_accepted"] == 2, timeout=30, what="n1 reflecting again")
        for _ in range(10):  # n2 must not drop the path when n1's End-of-RIB arrives
            seen.append(next_hops(lab, "n2", "10.244.3.0/24"))
            time.sleep(0.1)
    assert all(hops == {"10.0.0.13"} for hops in seen), seen
    assert result["sent"] > 50 and result["lost_count"] == 0, result
