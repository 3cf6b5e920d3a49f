"""`bgpnet lab` for real: an FRR router, a BIRD router and two hosts on a bridge node, up and down."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bgpnet.cli import main
from bgpnet.lab.netns import list_netns, unique_prefix, wait_for
from bgpnet.lab.probe import tcp_probe
from bgpnet.lab.routers import LabError
from bgpnet.lab.runner import Lab, lab_root

TOPOLOGY = """
name: frrbird
topology:
  kinds:
    linux:
      env: {LAB_GREETING: hello}
  nodes:
    r1:
      kind: linux
      image: quay.io/frrouting/frr:8.4.1
      binds: ["r1/frr.conf:/etc/frr/frr.conf"]
      exec: ["ip addr add 10.0.0.1/24 dev eth1"]
    r2:
      kind: linux
      image: {bird_image}
      binds: ["r2/bird.conf:/etc/bird/bird.conf"]
      exec: ["ip addr add 10.0.0.2/24 dev eth1"]
    h1: {kind: linux, image: alpine:3, exec: ["ip addr add 10.0.0.3/24 dev eth1"]}
    h2: {kind: linux, image: alpine:3, exec: ["ip addr add 10.0.0.4/24 dev eth1"]}
    sw: {kind: bridge}
  links:
    - endpoints: ["r1:eth1", "sw:p1"]
    - endpoints: ["r2:eth1", "sw:p2"]
    - endpoints: ["h1:eth1", "sw:p3"]
    - endpoints: ["h2:eth1", "sw:p4"]
"""

FRR_CONF = """frr defaults datacenter
hostname r1
log stdout
router bgp 65001
 bgp router-id 10.0.0.1
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 10.0.0.2 remote-as 65002
 address-family ipv4 unicast
  network 198.51.100.0/24
 exit-address-family
!
"""

BIRD_CONF = """router id 10.0.0.2;
protocol device {}
protocol kernel { ipv4 { export where source = RTS_BGP; }; }
protocol static { ipv4; route 192.0.2.0/24 blackhole; }
protocol bgp r1 { local 10.0.0.2 as 65002; neighbor 10.0.0.1 as 65001; ipv4 { import all; export all; }; }
"""


def write_lab(base: Path, bird_conf: str = BIRD_CONF, bird_image: str = "bird2:latest") -> Path:
    (base / "r1").mkdir(parents=True)
    (base / "r2").mkdir()
    (base / "r1" / "frr.conf").write_text(FRR_CONF)
    (base / "r2" / "bird.conf").write_text(bird_conf)
    path = base / "frrbird.clab.yml"
    path.write_text(TOPOLOGY.replace("{bird_image}", bird_image))
    return path


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line mentions `text` (the lab's run dir appears in every daemon's)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if text in cmdline and not zombie:
            out.append(int(pid))
    return out


def assert_gone(name: str, pids: list[int]) -> None:
    assert [n for n in list_netns() if n.startswith(f"{name}-")] == []
    alive = [p for p in pids if os.path.exists(f"/proc/{p}") and
             open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    assert alive == []
    assert processes_mentioning(str(lab_root() / name) + "/") == []
    assert not (lab_root() / name).exists()


@pytest.fixture
def lab_name():
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces)")
    name = unique_prefix("lt")
    yield name
    if (lab_root() / name / "state.json").exists():  # a failed test must not leave the lab behind
        Lab.open(name).down()


def test_frr_and_bird_peer_across_the_bridge_then_down_leaves_nothing(tmp_path, lab_name, capsys):
    topo = write_lab(tmp_path)
    lab = Lab.up(topo, prefix=lab_name)
    pids = [p.pid for n in lab.nodes.values() for p in n.procs]
    assert len(pids) == 3  # zebra, bgpd, bird
    assert sorted(lab.namespaces) == sorted(f"{lab_name}-{n}" for n in ("r1", "r2", "h1", "h2", "sw"))
    frr, bird = lab.frr("r1"), lab.bird("r2")

    def frr_established():
        peers = frr.vtysh_json("show bgp summary json")["ipv4Unicast"]["peers"]
        return peers["10.0.0.2"]["state"] == "Established" and peers["10.0.0.2"]["pfxRcd"] == 1

    wait_for(frr_established, timeout=60, what="FRR r1 Established with BIRD r2 and 1 prefix received")
    wait_for(lambda: bird.protocols()["r1"]["info"] == "Established", timeout=30, what="BIRD r2 Established")
    # each router learned the other's prefix and installed it in its own namespace's kernel table
    wait_for(lambda: "proto bgp" in lab.exec("r1", "ip", "route", "show", "192.0.2.0/24"), timeout=30,
             what="FRR route to BIRD's 192.0.2.0/24")
    wait_for(lambda: "198.51.100.0/24" in bird.birdc("show route protocol r1"), timeout=30,
             what="BIRD learned FRR's 198.51.100.0/24")
    wait_for(lambda: "proto bird" in lab.exec("r2", "ip", "route", "show", "198.51.100.0/24"), timeout=30,
             what="BIRD route to FRR's 198.51.100.0/24")

    # exec: in the node's namespace, with the node's env; the CLI returns the command's exit status
    assert "10.0.0.3/24" in lab.exec("h1", "ip", "-br", "addr", "show", "eth1")
    assert lab.exec("h2", "sh", "-c", "echo $LAB_GREETING").strip() == "hello"
    assert main(["lab", "exec", lab_name, "h1", "--", "sh", "-c", "exit 3"]) == 3
    assert main(["lab", "exec", lab_name, "h1", "--", "true"]) == 0
    # the two plain hosts reach each other over the bridge namespace with a real TCP connection
    ok, text = tcp_probe(lab.node("h2").netns, "10.0.0.4", lab.node("h1").netns, "10.0.0.3", port=8181)
    assert ok, text
    assert "pong from 10.0.0.4 to 10.0.0.3" in text
    # nothing of the lab is in the root namespace: the bridge lives in the sw namespace
    assert "br0" in lab.exec("sw", "ip", "-br", "link", "show", "type", "bridge")
    assert all(not link.startswith(("p1", "p2", "p3", "p4")) for link in os.listdir("/sys/class/net"))

    capsys.readouterr()
    assert main(["lab", "status", lab_name, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["nodes"]["r1"]["bgp"]["10.0.0.2"]["state"] == "Established"
    assert status["nodes"]["r2"]["bgp"]["r1"]["info"] == "Established"
    assert all(p["alive"] for n in status["nodes"].values() for p in n["processes"])
    assert main(["lab", "list"]) == 0
    assert lab_name in capsys.readouterr().out

    assert main(["lab", "down", lab_name]) == 0
    assert_gone(lab_name, pids)


BAD_BIRD = BIRD_CONF + "protocol bgp broken { neighbor 10.0.0.9 as; }\n"


def test_failed_up_rolls_back_everything(tmp_path, lab_name):
    topo = write_lab(tmp_path, bird_conf=BAD_BIRD)  # FRR (r1) starts first, then BIRD (r2) is rejected
    with pytest.raises(LabError) as ei:
        Lab.up(topo, prefix=lab_name)
    msg = str(ei.value)
    assert "rolled back" in msg and "BIRD rejects" in msg and "bird.conf" in msg, msg
    assert_gone(lab_name, [])


def test_down_after_a_failed_up_that_was_kept(tmp_path, lab_name):
    topo = write_lab(tmp_path, bird_conf=BAD_BIRD)
    with pytest.raises(LabError) as ei:
        Lab.up(topo, prefix=lab_name, keep_on_failure=True)
    assert f"bgpnet lab down {lab_name}" in str(ei.value)
    half = Lab.open(lab_name)
    assert half.status == "failed"
    frr_pids = [p.pid for p in half.node("r1").procs]
    assert len(frr_pids) == 2 and all(p.alive() for p in half.node("r1").procs)  # zebra and bgpd were up
    assert half.node("r2").procs == []
    assert all(os.path.exists(f"/run/netns/{ns}") for ns in half.namespaces)
    assert main(["lab", "down", lab_name]) == 0
    assert_gone(lab_name, frr_pids)


def test_up_refuses_bad_input_before_creating_anything(tmp_path, lab_name):
    topo = write_lab(tmp_path)
    (tmp_path / "r1" / "frr.conf").unlink()
    with pytest.raises(Exception) as ei:
        Lab.up(topo, prefix=lab_name)
    assert "topology.nodes.r1.binds[0]" in str(ei.value) and "does not exist" in str(ei.value)
    assert_gone(lab_name, [])
    assert main(["lab", "down", lab_name]) == 1  # nothing to take down: a clear error, not a traceback
