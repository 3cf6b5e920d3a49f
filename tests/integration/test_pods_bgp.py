"""Pods from an IPAM pool on three lab nodes reach each other over routes learned by BGP; the nodes
announce exactly the blocks in use, and a released block is withdrawn."""

from __future__ import annotations

import os
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from bgpnet import ipam
from bgpnet.datastore.local import LocalDatastore
from bgpnet.lab import pods
from bgpnet.lab.demo import Demo
from bgpnet.lab.netns import Netns, list_netns, unique_prefix, wait_for
from bgpnet.lab.probe import tcp_probe
from bgpnet.lab.routers import routes
from bgpnet.lab.runner import Lab

MESH3 = Path(__file__).resolve().parents[2] / "containerlab" / "mesh3.clab.yml"
POOL = IPv4Network("10.250.0.0/16")
NODES = ("n1", "n2", "n3")


def tor_pool_routes(lab: Lab) -> dict[IPv4Network, set[str]]:
    """Prefixes inside the pool in the FRR router's BGP table -> next hops (the announcing nodes)."""
    table = lab.frr("tor").vtysh_json("show bgp ipv4 unicast json").get("routes", {})
    out = {}
    for prefix, paths in table.items():
        net = IPv4Network(prefix)
        if net.subnet_of(POOL):
            out[net] = {h["ip"] for p in paths for h in p.get("nexthops", [])}
    return out


def kernel_pool_routes(lab: Lab, node: str) -> set[IPv4Network]:
    """Unicast routes bgpnet installed in the node for prefixes inside the pool (not its own blackholes)."""
    out = set()
    for line in routes(lab.node(node).netns):
        first = line.split()[0]
        if first[0].isdigit() and IPv4Network(first).subnet_of(POOL):
            out.add(IPv4Network(first))
    return out


def test_pods_on_three_nodes_reach_each_other_over_bgp():
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces)")
    name = unique_prefix("pb")
    lab = Lab.up(MESH3, prefix=name)
    made: list[str] = []
    try:
        demo = Demo(lab)
        gaps = demo.wait(timeout=90)
        assert gaps == [], "\n".join(gaps)
        store_path = pods.store_path(name, None, lab)
        store = LocalDatastore(store_path)
        ipam.add_pool(store, "pods", {"cidr": str(POOL), "block_size": 26})
        ips = {}
        for node in NODES:
            pod = f"default/web-{node}"
            made.append(pod)
            ips[pod] = pods.add_pod(name, node, pod, labels={"app": "web"}, store=store_path)["ip"]
        made.append("default/extra-n1")
        ips["default/extra-n1"] = pods.add_pod(name, "n1", "default/extra-n1", store=store_path)["ip"]
        listed = {f"{p['namespace']}/{p['name']}": p for p in pods.list_pods(name)}
        assert {k: v["ip"] for k, v in listed.items()} == ips

        # each node claimed one /26; the router learns exactly those blocks, each from the node owning it
        blocks = {n: ipam.node_prefixes(store, n) for n in NODES}
        assert all(len(b) == 1 and b[0].prefixlen == 26 for b in blocks.values()), blocks
        want = {blocks[n][0]: {demo.address_of[n]} for n in NODES}
        wait_for(lambda: tor_pool_routes(lab) == want, timeout=60,
                 what=f"the router to learn exactly {want} (has {tor_pool_routes(lab)})")
        for n in NODES:  # and each node installed the other nodes' blocks
            others = {blocks[m][0] for m in NODES if m != n}
            wait_for(lambda n=n, others=others: others <= kernel_pool_routes(lab, n), timeout=60,
                     what=f"{n} to install {others} (has {kernel_pool_routes(lab, n)})")

        # TCP between pods on different nodes, both ways round the ring, over the BGP-learned routes
        ring = [f"default/web-{n}" for n in NODES]
        for i, src in enumerate(ring):
            dst = ring[(i + 1) % len(ring)]
            ok, text = tcp_probe(Netns(listed[dst]["netns"]), ips[dst], Netns(listed[src]["netns"]), ips[src],
                                 port=8080)
            assert ok, f"{src} {ips[src]} -> {dst} {ips[dst]}: {text}"
        ok, text = tcp_probe(Netns(listed["default/web-n3"]["netns"]), ips["default/web-n3"],
                             Netns(listed["default/extra-n1"]["netns"]), ips["default/extra-n1"], port=8081)
        assert ok, text

        # n3's only pod goes: its block empties, gc releases it, and the announcement is withdrawn
        pods.del_pod(name, "default/web-n3", store=store_path)
        made.remove("default/web-n3")
        assert ipam.gc(store, "n3", grace_seconds=0).released_blocks == [str(blocks["n3"][0]).replace("/", "-")]
        assert ipam.node_prefixes(store, "n3") == []
        del want[blocks["n3"][0]]
        wait_for(lambda: tor_pool_routes(lab) == want, timeout=60,
                 what=f"the router to drop n3's block (has {tor_pool_routes(lab)})")
        wait_for(lambda: blocks["n3"][0] not in kernel_pool_routes(lab, "n1"), timeout=60,
                 what="n1 to remove the route to n3's released block")
    finally:
        for pod in made:
            try:
                pods.del_pod(name, pod)
            except Exception:  # noqa: BLE001 - best effort; the namespace goes below anyway
                Netns(pods.pod_netns(name, pod)).delete()
        lab.down()
    assert [n for n in list_netns() if n.startswith(f"{name}-")] == []
