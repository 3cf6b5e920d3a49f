"""The demo lab end to end: three bgpnet agents and an FRR router converge, pods reach each other over TCP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bgpnet.lab.demo import Demo
from bgpnet.lab.netns import list_netns, unique_prefix
from bgpnet.lab.runner import Lab, lab_root

MESH3 = Path(__file__).resolve().parents[2] / "containerlab" / "mesh3.clab.yml"


def test_mesh3_converges_and_pods_reach_each_other():
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces)")
    name = unique_prefix("m3")
    lab = Lab.up(MESH3, prefix=name)
    try:
        assert [lab.node(n).role for n in ("tor", "n1", "n2", "n3", "sw")] == ["frr", "bgpnet", "bgpnet",
                                                                            "bgpnet", "bridge"]
        # all nodes share one datastore file: the lab mapped the bound /var/lib/bgpnet to the lab dir
        stores = {Demo(lab).configs[n].datastore.path for n in ("n1", "n2", "n3")}
        assert stores == {str(lab.dir / "datastore" / "store.db")}
        demo = Demo(lab)
        gaps = demo.wait(timeout=90)
        assert gaps == [], "\n".join(gaps)
        assert demo.probe()
    finally:
        lab.down()
    assert [n for n in list_netns() if n.startswith(f"{name}-")] == []
    assert not (lab_root() / name).exists()
