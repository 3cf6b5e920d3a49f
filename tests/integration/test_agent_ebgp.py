"""Agents in an AS each, peering only with a real router (FRR 8 or BIRD 2) over eBGP: each learns the
other nodes' pod CIDRs through the router, installs them, and pod addresses reach each other."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bgpnet.lab.demo import Demo
from bgpnet.lab.netns import unique_prefix, wait_for
from bgpnet.lab.routers import routes
from bgpnet.lab.runner import Lab

CLAB = Path(__file__).resolve().parents[2] / "containerlab"


@pytest.mark.parametrize("router", ["frr", "bird"])
def test_agents_learn_each_other_through_an_ebgp_router(router):
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces)")
    lab = Lab.up(CLAB / f"ebgp-{router}.clab.yml", prefix=unique_prefix(f"e{router[0]}"))
    try:
        demo = Demo(lab)
        gaps = demo.wait(timeout=90)
        assert gaps == [], "\n".join(gaps)
        for i in (1, 2, 3):
            lines = routes(lab.node(f"n{i}").netns)
            learned = {line.split()[0] for line in lines if not line.startswith("blackhole")}
            assert learned == {f"10.244.{j}.0/24" for j in (1, 2, 3) if j != i}, lines
            assert f"blackhole 10.244.{i}.0/24" in " ".join(lines)
        if router == "bird":
            assert all(p["info"] == "Established" for p in lab.bird("router").protocols().values()
                       if p.get("proto") == "BGP"), lab.bird("router").birdc("show protocols")
        else:
            peers = lab.frr("router").vtysh_json("show bgp summary json")["ipv4Unicast"]["peers"]
            assert {p["state"] for p in peers.values()} == {"Established"}
        assert demo.probe()
        # n1 leaves: the router withdraws n1's CIDR from the others
        agent = next(p for p in lab.node("n1").procs if p.name == "bgpnet-agent")
        os.kill(agent.pid, 15)
        for n in ("n2", "n3"):
            wait_for(lambda n=n: not any(r.startswith("10.244.1.0/24") for r in routes(lab.node(n).netns)),
                     timeout=30, what=f"{n} to drop n1's CIDR after n1 left")
    finally:
        lab.down()
