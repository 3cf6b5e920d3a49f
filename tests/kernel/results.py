"""Reading what the kernel tier's scenarios wrote in the VM's scratch directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kernel import vm

RESULT_FILES = {"ipip": "result.json", "az": "az_result.json"}  # written by ipip_scenario / az_scenario


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def scenario_checks(res: vm.VmResult, scenario: str) -> dict[str, list]:
    """{check: [ok, detail]} of one scenario of the boot; a missing file fails the test with the VM's output."""
    checks = read_json(res.scratch / RESULT_FILES[scenario])
    if checks is None:
        pytest.fail(f"VM produced no {RESULT_FILES[scenario]} (exit {res.returncode} after {res.seconds:.0f}s):\n"
                    f"{res.output[-4000:]}")
    return checks
