"""One VM boot for the whole kernel tier: every scenario runs in it (tests/kernel/run_scenarios.py); each
test module reads its own scenario's result file."""

from __future__ import annotations

import pytest

from tests.kernel import vm
from tests.kernel.results import read_json


@pytest.fixture(scope="session")
def vm_run() -> vm.VmResult:
    why = vm.missing()
    if why:  # `make test` installs the VM tooling: missing tooling is a failure, not a skip
        pytest.fail(f"{why} (install it with `make bootstrap-vm`)")
    # booting takes 1-4 minutes under emulation; three agents + ExaBGP in the az scenario a few more
    res = vm.run_in_vm(vm.ROOT / "tests" / "kernel" / "run_scenarios.py", timeout=2400)
    print(f"\nkernel tier VM: exit {res.returncode} after {res.seconds:.0f}s; scenarios: "
          f"{read_json(res.scratch / 'seconds.json')}")
    return res
