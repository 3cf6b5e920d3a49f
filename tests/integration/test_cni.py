"""bgpnet-cni invoked exactly as a container runtime does (env + stdin JSON) inside a node namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from bgpnet import ipam
from bgpnet.cni.plugin import host_ifname
from bgpnet.datastore.base import IPAM_HANDLE, POD
from bgpnet.datastore.local import LocalDatastore
from bgpnet.lab.netns import wait_for

ROOT = Path(__file__).resolve().parents[2]

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen()
while True:
    c, a = s.accept(); c.sendall(("hello " + a[0]).encode()); c.close()
"""
CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2); print(s.recv(100).decode())
"""


def netconf(store_path, node="n1", version="1.0.0", **extra):
    conf = {"cniVersion": version, "name": "bgpnet", "type": "bgpnet-cni",
            "ipam": {"type": "bgpnet", "datastore": {"type": "local", "path": str(store_path)}, "node": node}}
    conf.update(extra)
    return conf


def cni(node_ns, command, container="", netns="", conf=None, stdin=None, pod=None, drop=()):
    """Run the plugin in `node_ns` like a runtime: CNI_* environment, config on stdin; (status, JSON or None)."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "CNI_COMMAND": command,
           "CNI_CONTAINERID": container, "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
    if pod:
        env["CNI_ARGS"] = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod[0]};K8S_POD_NAME={pod[1]}"
    for k in drop:
        env.pop(k)
    text = stdin if stdin is not None else json.dumps(conf)
    p = subprocess.run(node_ns.argv(sys.executable, "-m", "bgpnet.cni.plugin"), input=text, env=env,
                       capture_output=True, text=True, timeout=60)
    out = p.stdout.strip()
    return p.returncode, (json.loads(out) if out else None)


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "store.db"


def test_add_check_del_and_pod_to_pod_tcp(netns_factory, store_path):
    store = LocalDatastore(store_path)
    ipam.add_pool(store, "default", {"cidr": "10.244.0.0/24", "block_size": 28})
    node, p1, p2 = netns_factory("node"), netns_factory("p1"), netns_factory("p2")
    conf = netconf(store_path, args={"bgpnet": {"labels": {"app": "web"},
                                                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}})
    rc, res1 = cni(node, "ADD", "c1", f"/run/netns/{p1.name}", conf, pod=("default", "web-1"))
    assert rc == 0, res1
    rc, res2 = cni(node, "ADD", "c2", f"/run/netns/{p2.name}", conf, pod=("default", "web-2"))
    assert rc == 0, res2
    assert res1["cniVersion"] == "1.0.0"
    assert res1["ips"] == [{"address": "10.244.0.0/32", "gateway": "169.254.1.1", "interface": 1}]
    assert res1["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    assert res1["interfaces"][0]["name"] == host_ifname("c1")
    assert res1["interfaces"][1]["name"] == "eth0" and res1["interfaces"][1]["sandbox"] == f"/run/netns/{p1.name}"
    ip1, ip2 = res1["ips"][0]["address"].split("/")[0], res2["ips"][0]["address"].split("/")[0]
    assert ip2 == "10.244.0.1"

    (eth0,) = json.loads(p1.run("ip", "-j", "-4", "addr", "show", "eth0"))
    assert [(a["local"], a["prefixlen"]) for a in eth0["addr_info"]] == [(ip1, 32)]
    (link,) = json.loads(p1.run("ip", "-j", "link", "show", "eth0"))
    assert link["address"] == res1["interfaces"][1]["mac"] and "UP" in link["flags"]
    routes = json.loads(p1.run("ip", "-j", "route", "show", "default"))
    assert [(r["gateway"], r["dev"]) for r in routes] == [("169.254.1.1", "eth0")]
    host_routes = {r["dst"]: r["dev"] for r in json.loads(node.run("ip", "-j", "route"))}
    assert host_routes[ip1] == host_ifname("c1") and host_routes[ip2] == host_ifname("c2")
    assert node.run("cat", f"/proc/sys/net/ipv4/conf/{host_ifname('c1')}/proxy_arp").strip() == "1"
    pod = store.get(POD, "default/web-1").spec
    assert pod["node"] == "n1" and pod["ip"] == ip1 and pod["labels"] == {"app": "web"}
    assert pod["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert pod["netns"] == p1.name and pod["interface"] == host_ifname("c1")
    assert ipam.node_prefixes(store, "n1") == [IPv4Network("10.244.0.0/28")]

    server = p2.popen([sys.executable, "-c", SERVER, "8080"])
    try:
        out = wait_for(lambda: p1.run(sys.executable, "-c", CLIENT, ip2, "8080", check=False).strip(),
                       timeout=20, what=f"TCP {ip1} -> {ip2}:8080")
        assert out == f"hello {ip1}"
    finally:
        server.kill()
        server.wait()

    # CHECK with the ADD result as prevResult
    rc, out = cni(node, "CHECK", "c1", f"/run/netns/{p1.name}", {**conf, "prevResult": res1})
    assert (rc, out) == (0, None)
    p1.run("ip", "route", "del", "default")
    rc, out = cni(node, "CHECK", "c1", f"/run/netns/{p1.name}", {**conf, "prevResult": res1})
    assert rc == 1 and out["code"] == 101 and "default route via 169.254.1.1" in out["msg"]

    # DEL twice: both succeed, the address, handle, pod record and host side are gone after the first
    for _ in range(2):
        rc, out = cni(node, "DEL", "c1", f"/run/netns/{p1.name}", conf, pod=("default", "web-1"))
        assert (rc, out) == (0, None)
        assert store.get(IPAM_HANDLE, "bgpnet.c1") is None and store.get(POD, "default/web-1") is None
        assert host_ifname("c1") not in node.run("ip", "link")
    assert store.get(POD, "default/web-2") is not None
    # DEL when the pod's namespace is already gone (runtimes may call DEL after it was torn down)
    p2.delete()
    rc, out = cni(node, "DEL", "c2", f"/run/netns/{p2.name}", conf, pod=("default", "web-2"))
    assert (rc, out) == (0, None)
    assert store.list(IPAM_HANDLE) == [] and host_ifname("c2") not in node.run("ip", "link")


def test_bad_invocations_get_spec_errors(netns_factory, store_path):
    store = LocalDatastore(store_path)
    ipam.add_pool(store, "default", {"cidr": "10.244.0.0/24"})
    node = netns_factory("node")
    pod = netns_factory("pod")
    ns = f"/run/netns/{pod.name}"
    conf = netconf(store_path)

    rc, out = cni(node, "ADD", "c1", ns, stdin='{"cniVersion": "1.0.0", "name": ')
    assert rc == 1 and out["code"] == 6 and "not valid JSON" in out["msg"] and out["cniVersion"] == "1.0.0"
    rc, out = cni(node, "ADD", "c1", "/run/netns/no-such-pod-ns", conf)
    assert rc == 1 and out["code"] == 3 and "no-such-pod-ns does not exist" in out["msg"]
    rc, out = cni(node, "ADD", "c1", ns, conf, drop=["CNI_CONTAINERID"])
    assert rc == 1 and out["code"] == 4 and "CNI_CONTAINERID" in out["msg"]
    rc, out = cni(node, "ADD", "c1", ns, conf, drop=["CNI_COMMAND"])
    assert rc == 1 and out["code"] == 4
    rc, out = cni(node, "ADD", "c1", ns, netconf(store_path, version="9.9.9"))
    assert rc == 1 and out["code"] == 1 and "9.9.9 is not supported" in out["msg"]
    rc, out = cni(node, "ADD", "c1", ns, {**conf, "ipam": {"type": "host-local"}})
    assert rc == 1 and out["code"] == 7 and "ipam.type" in out["msg"]
    rc, out = cni(node, "ADD", "c1", ns, {**conf, "ipam": {**conf["ipam"], "datastore": {"type": "etcd"}}})
    assert rc == 1 and out["code"] == 7 and "ipam.datastore.type" in out["msg"]
    assert store.list(IPAM_HANDLE) == [] and "eth0" not in pod.run("ip", "link")

    rc, out = cni(node, "VERSION", stdin='{"cniVersion": "1.0.0"}')
    assert rc == 0 and out == {"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]}

    # an older config version gets the older result shape
    rc, out = cni(node, "ADD", "c1", ns, netconf(store_path, version="0.4.0"))
    assert rc == 0 and out["cniVersion"] == "0.4.0" and out["ips"][0]["version"] == "4"
    # a repeated ADD for the same container keeps its address and rewires cleanly
    rc, again = cni(node, "ADD", "c1", ns, netconf(store_path, version="0.4.0"))
    assert rc == 0 and again["ips"] == out["ips"]
    assert [h.name for h in store.list(IPAM_HANDLE)] == ["bgpnet.c1"]
    # a failure while wiring (the pod already has an eth0) releases the address and leaves no veth
    other = netns_factory("other")
    other.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "x0")
    rc, out = cni(node, "ADD", "c9", f"/run/netns/{other.name}", conf)
    assert rc == 1 and out["code"] == 5 and "eth0 already exists" in out["msg"]
    assert [h.name for h in store.list(IPAM_HANDLE)] == ["bgpnet.c1"]
    assert host_ifname("c9") not in node.run("ip", "link")


def test_add_after_pool_exhausted(netns_factory, store_path):
    store = LocalDatastore(store_path)
    ipam.add_pool(store, "tiny", {"cidr": "10.250.0.0/31", "block_size": 31})
    node = netns_factory("node")
    pods = [netns_factory(f"p{i}") for i in range(3)]
    conf = netconf(store_path)
    for i in range(2):
        rc, out = cni(node, "ADD", f"c{i}", f"/run/netns/{pods[i].name}", conf)
        assert rc == 0, out
    rc, out = cni(node, "ADD", "c2", f"/run/netns/{pods[2].name}", conf)
    assert rc == 1 and out["code"] == 100
    assert "no free address for node n1 in pool(s) tiny 10.250.0.0/31" in out["msg"]
    assert host_ifname("c2") not in node.run("ip", "link") and "eth0" not in pods[2].run("ip", "link")
    assert sorted(o.name for o in store.list(IPAM_HANDLE)) == ["bgpnet.c0", "bgpnet.c1"]
    # freeing one makes room again
    assert cni(node, "DEL", "c0", f"/run/netns/{pods[0].name}", conf) == (0, None)
    rc, out = cni(node, "ADD", "c2", f"/run/netns/{pods[2].name}", conf)
    assert rc == 0 and out["ips"][0]["address"] == "10.250.0.0/32"


def test_pod_mtu_follows_the_node_record_unless_the_config_sets_it(netns_factory, store_path):
    """The agent publishes the tunnel MTU (e.g. 1450 with VXLAN) on its Node; pods get it on both veth ends."""
    store = LocalDatastore(store_path)
    ipam.add_pool(store, "default", {"cidr": "10.244.0.0/24", "block_size": 28})
    store.put("Node", "n1", {"address": "10.0.0.11/24", "asn": 64512, "pod_mtu": 1450})
    node, p1, p2 = netns_factory("node"), netns_factory("p1"), netns_factory("p2")
    rc, res = cni(node, "ADD", "c1", f"/run/netns/{p1.name}", netconf(store_path))
    assert rc == 0, res
    assert "mtu 1450" in p1.run("ip", "link", "show", "eth0")
    assert "mtu 1450" in node.run("ip", "link", "show", host_ifname("c1"))
    rc, res = cni(node, "ADD", "c2", f"/run/netns/{p2.name}", netconf(store_path, mtu=1400))
    assert rc == 0, res
    assert "mtu 1400" in p2.run("ip", "link", "show", "eth0")
