"""`make demo` end to end: `python -m bgpnet.lab.demo` as a subprocess on a lab of its own; it must exit 0
and say what it saw: pods with IPs from the pool, blocks learned by FRR, TCP between pods, and the
NetworkPolicy refusing demo/other but not demo/client. Afterwards nothing of the lab is left."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bgpnet.lab.netns import list_netns, unique_prefix
from bgpnet.lab.runner import Lab, lab_root

ROOT = Path(__file__).resolve().parents[2]


def run_demo(name: str, *extra: str) -> subprocess.CompletedProcess:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "bgpnet.lab.demo", "--name", name, *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def section(out: str, title: str) -> str:
    """The lines of the section whose heading starts with `title`, up to the next blank line."""
    m = re.search(rf"^{re.escape(title)}.*?(?=^\s*$)", out, re.M | re.S)
    assert m, f"no section {title!r} in:\n{out}"
    return m.group(0)


def left_behind(name: str) -> list[str]:
    return [n for n in list_netns() if n.startswith(f"{name}-")]


def test_demo_shows_pods_blocks_tcp_and_policy_then_tears_down():
    name = unique_prefix("dm")
    try:
        p = run_demo(name)
        out = p.stdout
        assert p.returncode == 0, f"exit {p.returncode}\n{out}\n{p.stderr}"
        pods = section(out, "Step 1 (pool and pods)")
        ips = dict(re.findall(r"pod (demo/\w+)\s+on n\d: (10\.248\.\d+\.\d+)", pods))
        assert set(ips) == {"demo/web", "demo/client", "demo/other"}, pods
        blocks = re.findall(r"(n\d) announces block (10\.248\.\d+\.\d+/26);", pods)
        assert [n for n, _ in blocks] == ["n1", "n2", "n3"], pods
        learned = "tor (FRR) learned exactly these 3 blocks of 10.248.0.0/16: " + ", ".join(
            f"{b} from {n}" for n, b in sorted(blocks, key=lambda nb: [int(x) for x in nb[1][:-3].split(".")]))
        assert learned in pods, pods

        tcp = section(out, "Step 2 (TCP between pods)")
        for src, dst in (("client", "web"), ("web", "other"), ("other", "client")):
            assert re.search(rf"demo/{src} \(n\d\) -> demo/{dst} \(n\d\) {re.escape(ips['demo/' + dst])}:80: "
                             rf"allowed \(answer from demo/{dst} to {re.escape(ips['demo/' + src])}\)", tcp), tcp

        pol = section(out, "Step 3 (NetworkPolicy)")
        assert "networkpolicy demo/web-allow-client created" in pol, pol
        assert re.search(r"demo/client \(n2\) -> demo/web \(n1\) \S+:80: allowed \(answer from demo/web", pol), pol
        assert re.search(r"demo/other \(n3\) -> demo/web \(n1\) \S+:80: denied \(Connection refused\)", pol), pol
        assert "demo/other -> demo/web port 80/TCP: DENIED" in pol, pol
        assert "no rule of demo/web-allow-client allows it" in pol, pol

        after = section(out, "Step 4 (policy deleted)")
        assert "networkpolicy demo/web-allow-client deleted" in after, after
        assert re.search(r"demo/other \(n3\) -> demo/web \(n1\) \S+:80: allowed again \(answer from demo/web",
                         after), after
        assert f"Lab {name} torn down" in out
        assert left_behind(name) == []
        assert not (lab_root() / name).exists()
    finally:
        if (lab_root() / name / "state.json").exists():
            Lab.open(name).down()


def test_demo_keep_leaves_pods_up_and_lab_down_removes_them():
    name = unique_prefix("dk")
    try:
        p = run_demo(name, "--keep")
        assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        assert f"The lab stays up (--keep). Remove it with: bgpnet lab down {name}" in p.stdout
        pods = {f"{name}-pod-demo-{app}" for app in ("web", "client", "other")}
        assert pods <= set(left_behind(name)), left_behind(name)
    finally:
        if (lab_root() / name / "state.json").exists():
            Lab.open(name).down()
    assert left_behind(name) == []  # pod namespaces (and the TCP servers in them) go with the lab
