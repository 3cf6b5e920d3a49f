"""Runs INSIDE the VM: the kernel tier's scenarios one after the other in ONE boot (each writes its own result
file under $BGPNET_SCRATCH). `python tests/kernel/run_scenarios.py [ipip] [az]` (default: all)."""

from __future__ import annotations

import json
import os
import sys
import time

SCENARIOS = ("ipip", "az")


class Tee:
    """Progress also goes to $BGPNET_SCRATCH/console.log, readable on the host while the VM still runs."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


def main(argv: list[str]) -> int:
    from tests.kernel import az_scenario, ipip_scenario

    mains = {"ipip": ipip_scenario.main, "az": az_scenario.main}
    scratch = os.environ.get("BGPNET_SCRATCH", "/tmp")
    sys.stdout = Tee(sys.__stdout__, open(os.path.join(scratch, "console.log"), "a"))  # noqa: SIM115
    status, seconds = 0, {}
    for name in argv or SCENARIOS:
        t = time.monotonic()
        print(f"=== scenario {name}", flush=True)
        status |= mains[name]()
        seconds[name] = round(time.monotonic() - t, 1)
        print(f"=== scenario {name}: {seconds[name]}s", flush=True)
    with open(os.path.join(scratch, "seconds.json"), "w") as f:
        json.dump(seconds, f)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
