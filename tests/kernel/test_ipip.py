"""IPIP CrossSubnet on Debian's stock kernel, inside ONE virtme-ng VM boot (this host kernel has no ipip).

All assertions run in the guest (tests/kernel/ipip_scenario.py); each check is reported here as its own test.
The boot is shared with the other kernel scenarios (tests/kernel/conftest.py).
"""

from __future__ import annotations

import pytest

from tests.kernel.results import RESULT_FILES, read_json, scenario_checks

CHECKS = [
    "has_tunl0",
    "no_path_before_routes",
    "configured_by_exited_process",
    "ipip_route_onlink",
    "native_route_same_subnet",
    "blackhole_own_block",
    "tunl0_address_and_mtu",
    "cross_subnet_n1_to_n3",
    "cross_subnet_n3_to_n1",
    "big_payload_n1_to_n3",
    "big_payload_n3_to_n1",
    "router_sees_ip_proto_4",
    "router_sees_no_bare_pod_addresses",
    "same_subnet_n1_to_n2",
    "same_subnet_n2_to_n1",
    "same_subnet_native",
    "switch_to_vxlan_no_leftovers",
    "after_switch_vxlan_crosses",
    "scenario_completed",
]


@pytest.fixture(scope="module")
def vm_checks(vm_run) -> dict[str, list]:
    checks = scenario_checks(vm_run, "ipip")
    checks["_vm"] = [vm_run.returncode == 0, f"exit {vm_run.returncode} after {vm_run.seconds:.0f}s"]
    return checks


@pytest.mark.parametrize("name", CHECKS)
def test_ipip_in_vm(vm_checks, name):
    assert name in vm_checks, f"check {name} did not run; scenario: {vm_checks.get('scenario_completed')}"
    ok, detail = vm_checks[name]
    assert ok, detail


def test_vm_exit_status_matches_checks(vm_checks, vm_run):
    """The VM's exit status is 0 exactly when every scenario of the boot passed."""
    ok, detail = vm_checks["_vm"]
    everything = [v[0] for name in RESULT_FILES for v in (read_json(vm_run.scratch / RESULT_FILES[name]) or
                                                          {"missing": [False, ""]}).values()]
    assert ok == all(everything), detail
