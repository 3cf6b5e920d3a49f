"""Every benchmark in bench/ runs end to end at tiny sizes and reports positive numbers.

Smoke only: no timing thresholds here (performance targets are ratios printed by `make bench`).
"""

from __future__ import annotations

import os

import pytest

from bench.run_all import SMOKE_ARGS, benchmarks, run


def positive_numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in positive_numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in positive_numbers(v)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [value]
    return []


@pytest.mark.parametrize("name", benchmarks())
def test_benchmark_runs_small(name):
    if os.geteuid() != 0:
        pytest.fail("benchmarks need root (network namespaces)")
    if name not in SMOKE_ARGS:
        pytest.skip(f"no smoke sizes known for bench_{name}")
    code, out, result, _ = run(name, SMOKE_ARGS[name], timeout=600)
    assert code == 0, out[-3000:]
    if result is None:  # a benchmark that prints only a text report
        assert out.strip(), "no output"
        return
    if name == "e2e":
        m = result["median_s"]
        assert all(m[k] > 0 for k in ("ref_add", "ref_del", "agent_add", "agent_del")), result
        assert result["rss_kib"]["agent"] > 0 and result["rss_kib"]["ref"] > 0
    elif name == "footprint":
        assert result["rss_kib"]["agent"] > 0 and result["rss_kib"]["ref"] > 0, result
        assert all(v >= 0 for v in result["idle_cpu_percent"].values()), result
    elif name == "convergence":
        assert result["join_new_s"] > 0 and result["join_restart_median_s"] > 0, result
        assert result["leave_median_s"] > 0 and result["rss_kib_per_node"] > 0, result
    elif name == "routes":
        assert all(v > 0 for v in result["median_s"].values()), result
    numbers = positive_numbers(result)
    assert numbers and all(x >= 0 for x in numbers), result
