"""The az2 lab with an IPIP CrossSubnet pool and the real agents (ExaBGP, CNI pods), inside the kernel tier's
VM boot (this host kernel has no ipip). The steps are tests/kernel/az_scenario.py's, run in the guest; each
check is reported here as its own test."""

from __future__ import annotations

import pytest

from tests.kernel.results import scenario_checks

CHECKS = [
    "a1_to_a2_block_native",
    "a1_to_b1_block_encapsulated",
    "b1_to_a1_block_encapsulated",
    "tunnel_device_mtu_and_address",
    "cross_zone_a1_to_b1",
    "cross_zone_b1_to_a1",
    "cross_zone_a2_to_b1",
    "cross_zone_b1_to_a2",
    "big_payload_a1_to_b1",
    "big_payload_b1_to_a1",
    "router_sees_ipip",
    "router_sees_no_bare_pod_addresses",
    "same_zone_a1_to_a2",
    "same_zone_a2_to_a1",
    "same_zone_native",
    "same_zone_never_crosses_router",
    "session_open_a1_to_b1",
    "session_open_b1_to_a2",
    "session_open_a1_to_a2",
    "every_agent_stopped",
    "routes_kept_after_stop",
    "established_a1_to_b1_after_stop",
    "established_b1_to_a2_after_stop",
    "established_a1_to_a2_after_stop",
    "new_a1_to_b1_after_stop",
    "new_b1_to_a1_after_stop",
    "new_a2_to_a1_after_stop",
    "new_b1_to_a2_after_stop",
    "big_payload_after_stop",
    "az_scenario_completed",
]


@pytest.fixture(scope="module")
def az_checks(vm_run) -> dict[str, list]:
    checks = scenario_checks(vm_run, "az")
    print(f"\naz scenario timings in the VM (s): {checks.get('_timings', ['', '?'])[1]}")
    return checks


@pytest.mark.parametrize("name", CHECKS)
def test_az_ipip_in_vm(az_checks, name):
    assert name in az_checks, f"check {name} did not run; scenario: {az_checks.get('az_scenario_completed')}"
    ok, detail = az_checks[name]
    assert ok, detail


def test_no_unlisted_check_failed(az_checks):
    failed = {k: v for k, v in az_checks.items() if k not in CHECKS and not v[0]}
    assert not failed, failed
