"""On this kernel (no CONFIG_NET_IPIP) an agent given an IPIP pool stops at start: exit status 3, a message
naming the missing kernel option and the alternative (vxlan), and nothing created in the kernel."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from bgpnet.datastore import base as kinds
from bgpnet.datastore.local import LocalDatastore
from bgpnet.ipip.tunnel import TunnelDriver
from bgpnet.lab.netns import veth
from bgpnet.lab.routers import package_root


def test_agent_refuses_an_ipip_pool_without_kernel_ipip(netns_factory, tmp_path):
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces)")
    node, other = netns_factory("noipip"), netns_factory("noipip-peer")
    if TunnelDriver(node.name).has_ipip():
        pytest.skip("this kernel has IPIP: the refusal cannot happen here")
    veth(node, "eth1", other, "eth1")
    node.run("ip", "addr", "add", "10.0.9.11/24", "dev", "eth1")
    other.run("ip", "addr", "add", "10.0.9.12/24", "dev", "eth1")
    store = tmp_path / "store.db"
    config = tmp_path / "n1.yaml"
    config.write_text(yaml.safe_dump({
        "node": {"name": "n1", "address": "10.0.9.11/24", "asn": 64512},
        "pools": [{"name": "pods", "cidr": "10.248.0.0/16", "encapsulation": "ipip", "mode": "CrossSubnet",
                   "nat_outgoing": True}],
        "datastore": {"type": "local", "path": str(store)},
        "http": {"listen": ""},
    }))
    def nat() -> list[str]:
        return [line for line in node.run("iptables-save", "-t", "nat").splitlines() if not line.startswith("#")]

    before = {"links": node.run("ip", "-o", "link", "show"), "nat": nat()}
    p = subprocess.run(node.argv(sys.executable, "-m", "bgpnet", "agent", "--config", str(config), "--run-dir",
                                 str(tmp_path / "run")),
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": package_root()})
    assert p.returncode == 3, (p.returncode, p.stderr[-3000:])
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("bgpnet: error:") and "CONFIG_NET_IPIP" in last and "encapsulation: vxlan" in last, last

    # nothing created: no tunnel device or address, no routes of ours, no NAT, no speaker left running
    assert node.run("ip", "-o", "link", "show") == before["links"]
    assert node.run("ip", "-o", "addr", "show", "dev", "eth1").count("inet ") == 1
    assert node.run("ip", "route", "show", "proto", "201") == ""
    assert node.run("ip", "route", "show", "table", "all", "proto", "201") == ""
    assert nat() == before["nat"]
    assert "bgpnet" not in node.run("ipset", "list", "-n")
    assert node.pids() == []
    assert not (tmp_path / "run" / "exabgp.conf").exists()
    # and the datastore has the pool (the cluster's config) but no node record and no tunnel address
    ds = LocalDatastore(str(store))
    assert [o.name for o in ds.list(kinds.IP_POOL)] == ["pods"] and ds.list(kinds.NODE) == []
    assert ds.list(kinds.IPAM_BLOCK) == [] and ds.list(kinds.IPAM_HANDLE) == [], (
        ds.list(kinds.IPAM_BLOCK), ds.list(kinds.IPAM_HANDLE))
