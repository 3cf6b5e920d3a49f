"""The node agent end to end in the mesh3 lab (3 agents + FRR): withdrawal on stop, ExaBGP restart,
drift repair, and routes bgpnet does not own left alone. One lab serves the module; tests run in order
from least to most destructive."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from bgpnet.lab.demo import Demo
from bgpnet.lab.netns import wait_for
from bgpnet.lab.routers import routes
from tests.integration.fabric_helpers import converged_lab, status

MESH3 = Path(__file__).resolve().parents[2] / "containerlab" / "mesh3.clab.yml"


@pytest.fixture(scope="module")
def mesh():
    with converged_lab(MESH3, "ag") as lab:
        yield lab, Demo(lab)


def has_route(lab, node, prefix) -> bool:
    return any(line.startswith(prefix) for line in routes(lab.node(node).netns))


def test_routes_are_native_via_the_peer_and_blackhole_own(mesh):
    lab, demo = mesh
    r1 = routes(lab.node("n1").netns)
    assert "blackhole 10.244.1.0/24" in " ".join(r1)
    assert any(line.startswith("10.244.2.0/24 via 10.0.0.12 dev eth1") for line in r1), r1
    assert any(line.startswith("10.244.3.0/24 via 10.0.0.13 dev eth1") for line in r1), r1
    st = status(lab, "n1")
    assert st["in_sync"] and {p["state"] for p in st["peers"]} == {"established"}
    assert demo.probe()


def test_drift_is_repaired_and_foreign_routes_left_alone(mesh):
    lab, _ = mesh
    lab.exec("n1", "ip", "route", "del", "10.244.2.0/24")
    lab.exec("n1", "ip", "route", "add", "10.99.0.0/24", "via", "10.0.0.1")  # someone else's route
    lab.exec("n1", "ip", "route", "add", "10.244.2.128/25", "via", "10.0.0.1", "proto", "static")
    wait_for(lambda: has_route(lab, "n1", "10.244.2.0/24 via 10.0.0.12"), timeout=20,
             what="n1's deleted route to n2's pods to come back on resync")
    other = lab.exec("n1", "ip", "route", "show")
    assert "10.99.0.0/24 via 10.0.0.1" in other
    assert "10.244.2.128/25 via 10.0.0.1 dev eth1 proto static" in other


def test_killed_exabgp_is_restarted_and_routes_come_back(mesh):
    lab, _ = mesh
    before = status(lab, "n2")
    pid = int((lab.node("n2").run_dir / "exabgp.pid").read_text()) if (lab.node("n2").run_dir / "exabgp.pid").exists() \
        else None
    if pid is None:  # find ExaBGP among the processes of n2's namespace
        pids = [p for p in lab.node("n2").netns.pids() if "exabgp" in Path(f"/proc/{p}/cmdline").read_text()]
        pid = pids[0]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: status(lab, "n2")["speaker_restarts"] > before["speaker_restarts"], timeout=30,
             what="n2's agent to restart ExaBGP")
    wait_for(lambda: all(p["state"] == "established" for p in status(lab, "n2")["peers"]), timeout=60,
             what="n2's sessions to come back")
    for node, prefix in (("n1", "10.244.2.0/24"), ("n3", "10.244.2.0/24"), ("n2", "10.244.1.0/24"),
                         ("n2", "10.244.3.0/24")):
        wait_for(lambda node=node, prefix=prefix: has_route(lab, node, prefix), timeout=30,
                 what=f"{node}'s route to {prefix}")


def test_stopped_agent_routes_are_withdrawn_everywhere(mesh):
    lab, _ = mesh
    agent = next(p for p in lab.node("n3").procs if p.name == "bgpnet-agent")
    os.kill(agent.pid, signal.SIGTERM)
    for node in ("n1", "n2"):
        wait_for(lambda node=node: not has_route(lab, node, "10.244.3.0/24"), timeout=20,
                 what=f"{node} to remove n3's pod route after n3's agent stopped")
    frr = lab.frr("tor").vtysh_json("show bgp ipv4 unicast json")
    assert "10.244.3.0/24" not in frr.get("routes", {})
    # the stopped node keeps forwarding on what it had (fail static) until its next start
    assert has_route(lab, "n3", "10.244.1.0/24")


def test_neighbour_changes_apply_while_a_router_is_down(mesh):
    """ExaBGP defers reloads while a peer has queued routes; a down router must not block a node joining."""
    lab, _ = mesh
    for proc in lab.node("tor").procs:
        os.kill(proc.pid, signal.SIGTERM)  # FRR sends a Cease and is gone; the nodes keep trying it
    wait_for(lambda: any(p["address"] == "10.0.0.1" and p["state"] != "established" for p in status(lab, "n1")["peers"]),
             timeout=60, what="n1 to notice the router is gone")
    log = lab.node("n1").run_dir / "exabgp.log"
    loaded_before = log.read_text().count("loaded new configuration successfully")
    from bgpnet.datastore.local import LocalDatastore

    store = LocalDatastore(Demo(lab).configs["n1"].datastore.path)
    store.put("Node", "n9", {"address": "10.0.0.19/24", "asn": 64512, "router_id": "10.0.0.19"})
    wait_for(lambda: log.read_text().count("loaded new configuration successfully") > loaded_before, timeout=40,
             what="n1's ExaBGP to load the config with the new node n9 while the router is down")
    assert "neighbor 10.0.0.19 {" in (lab.node("n1").run_dir / "exabgp.conf").read_text()
    assert any(p["address"] == "10.0.0.19" for p in status(lab, "n1")["peers"])
