"""Shared fixtures. Tests are marked by directory: tests/unit, tests/integration, tests/kernel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bgpnet.lab.netns import Netns, unique_prefix

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in ("unit", "integration", "kernel"):
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def netns_factory():
    """Create namespaces with a per-run prefix; all are deleted (processes inside killed) afterwards."""
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces)")
    prefix = unique_prefix()
    made: list[Netns] = []

    def make(suffix: str) -> Netns:
        ns = Netns.create(f"{prefix}-{suffix}")
        made.append(ns)
        return ns

    make.prefix = prefix
    yield make
    for ns in reversed(made):
        ns.delete()
