"""Helpers for the fabric labs: pod stand-in addresses, status files, UDP probe streams, agent restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from bgpnet.lab import routers
from bgpnet.lab.netns import wait_for  # noqa: F401 - re-exported for the tests

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def status(lab, node: str) -> dict:
    return json.loads((lab.node(node).run_dir / "status.json").read_text())


def peer(lab, node: str, name: str) -> dict:
    return next(p for p in status(lab, node)["peers"] if p["name"] == name)


def route(lab, node: str, prefix: str) -> str:
    """`ip route` text for `prefix` with our protocol (multipath routes span several lines)."""
    return lab.exec(node, "ip", "route", "show", prefix, "proto", "201").strip()


def next_hops(lab, node: str, prefix: str) -> set[str]:
    words = route(lab, node, prefix).split()
    return {words[i + 1] for i, w in enumerate(words) if w == "via"}


def add_pod(lab, node: str, address: str) -> None:
    """A stand-in pod: the address on the node's lo (what a CNI-wired pod looks like from routing)."""
    lab.exec(node, "ip", "addr", "replace", f"{address}/32", "dev", "lo")


@contextmanager
def udp_stream(lab, src_node: str, src: str, dst_node: str, dst: str, port: int = 9999, interval: float = 0.02):
    """Yield a dict filled, after the block, with the sender's result (sent, answered, lost ...)."""
    py = [sys.executable, "-m", "tests.integration.udp_probe"]
    echo = lab.node(dst_node).netns.popen(py + ["echo", dst, str(port)], stdout=subprocess.PIPE, text=True, env=ENV)
    result: dict = {}
    sender = None
    try:
        assert echo.stdout.readline().strip() == "listening"
        sender = lab.node(src_node).netns.popen(py + ["send", src, dst, str(port), "--interval", str(interval)],
                                                stdout=subprocess.PIPE, text=True, env=ENV)
        assert sender.stdout.readline().strip() == "sending"
        yield result
        sender.send_signal(signal.SIGTERM)
        out, _ = sender.communicate(timeout=10)
        result.update(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in (sender, echo):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def agent_alive(lab, node: str) -> bool:
    return any(p.name == "bgpnet-agent" and p.alive() for p in lab.node(node).procs)


def agent_proc(lab, node: str):
    return next(p for p in lab.node(node).procs if p.name == "bgpnet-agent" and p.alive())


def stop_agent(lab, node: str, sig: int = signal.SIGTERM, timeout: float = 20, during=None) -> None:
    """Signal the node's agent and wait until it is gone, calling `during()` meanwhile."""
    old = agent_proc(lab, node)
    os.kill(old.pid, sig)
    deadline = time.monotonic() + timeout
    while old.alive() and time.monotonic() < deadline:
        if during:
            during()
        time.sleep(0.05)
    if old.alive():
        raise TimeoutError(f"{node}'s agent did not exit within {timeout}s")


def start_agent(lab, node: str) -> None:
    """Start the node's agent again on its config copy (recorded in the lab state, so `down` stops it)."""
    n = lab.node(node)
    handle = routers.start_agent(n.netns, n.config, n.run_dir, env=n.env)
    lab._handles.append(handle)
    n.procs.extend(handle.procs)
    lab.save()


def restart_agent(lab, node: str, sig: int = signal.SIGUSR2, timeout: float = 20, pause: float = 0.0,
                  during=None) -> None:
    """Stop the node's agent with `sig` (calling `during()` until it is gone and for `pause` seconds
    more), then start it again."""
    stop_agent(lab, node, sig, timeout, during)
    until = time.monotonic() + pause
    while time.monotonic() < until:
        if during:
            during()
        time.sleep(0.1)
    start_agent(lab, node)


def reload(lab, node: str, edit) -> None:
    """Rewrite the node's running config copy with `edit(text) -> text`, then `bgpnet reload`."""
    cfg = Path(lab.node(node).config)
    cfg.write_text(edit(cfg.read_text()))
    subprocess.run([sys.executable, "-m", "bgpnet", "reload", "--run-dir", str(lab.node(node).run_dir)],
                   check=True, capture_output=True, env=ENV)


def set_peer(name: str, **fields):
    """An edit for `reload`: change (value None: remove) fields of the config's peer entry `name`."""
    def edit(text: str) -> str:
        data = yaml.safe_load(text)
        entry = next(p for p in data["peers"] if p.get("name") == name)
        for key, value in fields.items():
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = value
        return yaml.safe_dump(data, sort_keys=False)
    return edit


def wait_established(lab, node: str, timeout: float = 60) -> None:
    wait_for(lambda: all(p["state"] == "established" for p in status(lab, node)["peers"]), timeout=timeout,
             what=f"every session of {node} established")


def since(lab, node: str, name: str) -> float:
    return peer(lab, node, name)["since"]


def frr_established_count(lab, router: str, neighbor: str) -> int:
    data = lab.frr(router).vtysh_json(f"show bgp neighbors {neighbor} json")
    return int(data.get(neighbor, {}).get("connectionsEstablished", 0))


def sample_routes(lab, node: str, prefix: str, until: float, every: float = 0.1) -> list[str]:
    """`ip route` texts for `prefix` sampled until monotonic time `until` (to show a route never went away)."""
    out = []
    while time.monotonic() < until:
        out.append(route(lab, node, prefix))
        time.sleep(every)
    return out


@contextmanager
def converged_lab(topology: Path, prefix: str, pods: dict[str, str] | None = None):
    """Bring `topology` up, wait until every session and route is in place, give the listed nodes a
    stand-in pod address; always take the lab down afterwards."""
    import pytest

    from bgpnet.lab.demo import Demo
    from bgpnet.lab.netns import unique_prefix
    from bgpnet.lab.runner import Lab

    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces)")
    lab = Lab.up(topology, prefix=unique_prefix(prefix))
    try:
        gaps = Demo(lab).wait(timeout=90)
        assert gaps == [], "\n".join(gaps)
        for node, address in (pods or {}).items():
            add_pod(lab, node, address)
        yield lab
    finally:
        lab.down()
