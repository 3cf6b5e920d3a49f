"""Two availability zones (containerlab/az2.clab.yml) with real agents: a VXLAN CrossSubnet pool carries pod
traffic across a router that knows no pod routes; a run-time switch to Never and back; fail static with every
agent stopped. The steps live in tests/kernel/az_scenario.py (the VM runs them with IPIP)."""

from __future__ import annotations

import os

import pytest

from bgpnet.lab.netns import list_netns
from tests.kernel.az_scenario import Az, run


def test_az_vxlan_cross_subnet_with_agents(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces)")
    seen: list[str] = []

    def check(name: str, ok: bool, detail: object = "") -> None:
        seen.append(name)
        assert ok, f"{name}: {detail}"

    az = Az("vxlan", tmp_path, check, timeout=90)
    try:
        run(az, mode_switch=True)
    finally:
        az.down()
        print("timings:", {k: round(v, 1) for k, v in az.timings.items()})
    assert len(seen) >= 30, seen  # every step ran its checks
    assert [n for n in list_netns() if n.startswith(f"{az.name}-")] == []
