"""The containerlab topology parser: good files become dataclasses, bad ones errors naming file + field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgpnet.errors import ConfigError
from bgpnet.lab.topology import (
    Bind,
    Endpoint,
    Link,
    host_path,
    load_topology,
    parse_topology,
    resolve_bind_host,
    rewrite_bound_paths,
)

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
name: t1
topology:
  defaults:
    env: {LEVEL: "1", SHARED: x}
    binds: ["common:/etc/common"]
  kinds:
    linux:
      image: alpine:3
      env: {LEVEL: "2"}
      labels: {role: node}
  nodes:
    r1:
      kind: linux
      image: quay.io/frrouting/frr:8.4.1
      binds: ["r1/frr.conf:/etc/frr/frr.conf:ro", "/abs/x:/etc/common"]
      exec: ["ip addr add 10.0.0.1/24 dev eth1"]
      env: {LEVEL: "3"}
      mgmt-ipv4: 172.20.20.2
    b1: {kind: linux, image: bird2-custom, binds: ["__clabDir__/shared:/var/lib/x"]}
    n1: {kind: linux, image: ghcr.io/example/bgpnet:dev, labels: {rack: r1}}
    h1: {kind: linux}
    sw: {kind: bridge}
  links:
    - endpoints: ["r1:eth1", "sw:p1"]
    - endpoints: [{node: b1, interface: eth1}, {node: sw, interface: p2}]
    - type: veth
      endpoints: ["n1:eth1", "h1:eth1"]
"""


def parse(text: str, path: str = "/labs/t.clab.yml"):
    return parse_topology(text, path)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as ei:
        parse(text)
    return str(ei.value)


def test_good_file_merges_defaults_kind_and_node_in_that_order():
    t = parse(GOOD)
    assert t.name == "t1"
    assert list(t.nodes) == ["r1", "b1", "n1", "h1", "sw"]
    r1 = t.nodes["r1"]
    assert r1.kind == "linux" and r1.image == "quay.io/frrouting/frr:8.4.1"
    assert r1.env == {"LEVEL": "3", "SHARED": "x"}
    assert r1.labels == {"role": "node"}
    # the node's bind of /etc/common replaces the defaults' one; relative host paths are from the file's dir
    assert set(r1.binds) == {Bind("/labs/r1/frr.conf", "/etc/frr/frr.conf", "ro"), Bind("/abs/x", "/etc/common")}
    assert r1.exec == ("ip addr add 10.0.0.1/24 dev eth1",)
    assert t.nodes["h1"].image == "alpine:3"  # from the kind
    assert t.nodes["h1"].env == {"LEVEL": "2", "SHARED": "x"}
    assert t.nodes["n1"].labels == {"role": "node", "rack": "r1"}
    assert t.nodes["b1"].binds[-1] == Bind("__clabDir__/shared", "/var/lib/x")
    assert t.links == (
        Link(Endpoint("r1", "eth1"), Endpoint("sw", "p1")),
        Link(Endpoint("b1", "eth1"), Endpoint("sw", "p2")),
        Link(Endpoint("n1", "eth1"), Endpoint("h1", "eth1")),
    )
    assert any("mgmt-ipv4" in w for w in t.warnings)


def test_roles_come_from_the_image():
    t = parse(GOOD)
    assert {n: node.role for n, node in t.nodes.items()} == {
        "r1": "frr", "b1": "bird", "n1": "bgpnet", "h1": "host", "sw": "bridge"}


def test_repository_topologies_parse():
    mesh3 = load_topology(ROOT / "containerlab" / "mesh3.clab.yml")
    assert mesh3.name == "mesh3"
    roles = sorted(n.role for n in mesh3.nodes.values())
    assert roles == ["bgpnet", "bgpnet", "bgpnet", "bridge", "frr"]
    for node in mesh3.nodes.values():
        for bind in node.binds:
            if not bind.host.startswith("__clab"):
                assert Path(bind.host).exists(), f"{node.name}: {bind.host}"
    assert mesh3.warnings == ()


@pytest.mark.parametrize("text, where, message", [
    ("topology: {nodes: {a: {kind: linux}}}", "/labs/t.clab.yml: name", "required field is missing"),
    ("name: t\ntopology: {nodes: {}}", "topology.nodes", "at least one node"),
    ("name: 'bad name'\ntopology: {nodes: {a: {kind: linux}}}", "name", "must be letters"),
    ("name: t\ntopology: {nodes: {a: {kind: srl}}}", "topology.nodes.a.kind", "kind 'srl' is not supported"),
    ("name: t\ntopology: {nodes: {a: {image: x}}}", "topology.nodes.a.kind", "required field is missing"),
    ("name: t\ntopology: {nodes: {a: {kind: linux, imgae: x}}}", "topology.nodes.a.imgae",
     "unknown field `imgae` (did you mean `image`?)"),
    ("name: t\ntopology: {nodes: {a: {kind: linux, binds: [onlyhost]}}}", "topology.nodes.a.binds[0]",
     "is not `host_path:container_path"),
    ("name: t\ntopology: {nodes: {a: {kind: linux, binds: ['x:rel/path']}}}", "topology.nodes.a.binds[0]",
     "must be absolute"),
    ("name: t\ntopology: {nodes: {a: {kind: linux, binds: ['x:/y:rx']}}}", "topology.nodes.a.binds[0]",
     "mode 'rx'"),
    ("name: t\ntopology: {nodes: {a: {kind: linux, exec: 'ip link'}}}", "topology.nodes.a.exec",
     "expected a list"),
    ("name: t\ntopology: {nodes: {a: {kind: linux, env: {X: [1]}}}}", "topology.nodes.a.env.X",
     "expected a string value"),
    ("name: t\ntopology: {nodes: {s: {kind: bridge, exec: [x]}}}", "topology.nodes.s", "a bridge node takes no"),
    ("name: t\ntopology: {kinds: {ceos: {}}, nodes: {a: {kind: linux}}}", "topology.kinds.ceos", "not supported"),
])
def test_bad_nodes(text, where, message):
    err = error_of(text)
    assert err.startswith("/labs/t.clab.yml: ")
    assert where in err and message in err, err


LINKS = "name: t\ntopology:\n  nodes: {n1: {kind: linux}, n2: {kind: linux}, sw: {kind: bridge}}\n  links:\n"


@pytest.mark.parametrize("links, where, message", [
    ("    - endpoints: ['n1:eth1', 'sw:p1']\n    - endpoints: ['n2:eth1', 'sw:p2']\n"
     "    - endpoints: ['n1:eth2', 'n9:eth1']\n",
     "topology.links[2].endpoints[1]", 'node "n9" is not defined'),
    ("    - endpoints: ['n1:eth1', 'n11:eth1']\n", "topology.links[0].endpoints[1]", "(did you mean 'n1'?)"),
    ("    - endpoints: ['n1:eth1']\n", "topology.links[0].endpoints", "exactly two endpoints"),
    ("    - endpoints: ['n1-eth1', 'n2:eth1']\n", "topology.links[0].endpoints[0]", "is not `node:interface`"),
    ("    - endpoints: ['n1:averyveryverylongname', 'n2:eth1']\n", "topology.links[0].endpoints[0]",
     "1-15 letters"),
    ("    - endpoints: ['n1:eth1', 'sw:br0']\n", "topology.links[0].endpoints[1]", "bridge device itself"),
    ("    - endpoints: ['n1:eth1', 'sw:p1']\n    - endpoints: ['n1:eth1', 'n2:eth1']\n",
     "topology.links[1].endpoints[0]", "n1:eth1 is already used by topology.links[0]"),
    ("    - type: macvlan\n      endpoints: ['n1:eth1', 'sw:p1']\n", "topology.links[0].type", "only veth"),
    ("    - endpoints: ['n1:eth1', 'sw:p1']\n      mtu: 9000\n      weight: 3\n", "topology.links[0].weight",
     "unknown field"),
])
def test_bad_links(links, where, message):
    err = error_of(LINKS + links)
    assert where in err and message.replace('"', "'") in err.replace('"', "'"), err


def test_yaml_syntax_error_names_line_and_column():
    err = error_of("name: t\ntopology:\n  nodes: {a: [\n")
    assert err.startswith("/labs/t.clab.yml:") and "not valid YAML" in err


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_topology(tmp_path / "nope.clab.yml")
    assert "nope.clab.yml" in str(ei.value) and "cannot read" in str(ei.value)


def test_magic_bind_dirs_map_to_the_lab_and_node_dirs():
    lab, node = "/run/bgpnet-lab/x", "/run/bgpnet-lab/x/n1"
    assert resolve_bind_host(Bind("__clabDir__/store", "/var/lib/bgpnet"), lab, node) == f"{lab}/store"
    assert resolve_bind_host(Bind("__clabNodeDir__/cfg", "/c"), lab, node) == f"{node}/cfg"
    assert resolve_bind_host(Bind("/etc/hosts", "/etc/hosts"), lab, node) == "/etc/hosts"


def test_host_path_takes_the_longest_bound_prefix():
    binds = {"/var/lib/bgpnet": "/h/store", "/var/lib/bgpnet/special.db": "/h/special.db", "/etc/x": "/h/x"}
    assert host_path("/var/lib/bgpnet/store.db", binds) == "/h/store/store.db"
    assert host_path("/var/lib/bgpnet/special.db", binds) == "/h/special.db"
    assert host_path("/var/lib/bgpnet", binds) == "/h/store"
    assert host_path("/var/lib/bgpnetx/a", binds) is None  # a path prefix, not a string prefix
    assert host_path("/etc/y", binds) is None


def test_rewrite_bound_paths_maps_only_bound_container_paths():
    binds = {"/var/lib/bgpnet": "/run/lab/datastore", "/etc/bgpnet/md5": "/labs/secrets/md5"}
    config = {
        "node": {"name": "n1", "address": "10.0.0.11/24"},
        "datastore": {"type": "local", "path": "/var/lib/bgpnet/store.db"},
        "peers": [{"address": "10.0.0.1", "asn": 65000, "password_file": "/etc/bgpnet/md5"}],
        "run_dir": "/run/bgpnet",
        "pod_cidrs": ["10.244.1.0/24"],
    }
    out = rewrite_bound_paths(config, binds)
    assert out["datastore"]["path"] == "/run/lab/datastore/store.db"
    assert out["peers"][0]["password_file"] == "/labs/secrets/md5"
    assert out["run_dir"] == "/run/bgpnet"  # not bound: left alone
    assert out["node"] == config["node"] and out["pod_cidrs"] == ["10.244.1.0/24"]
    assert config["datastore"]["path"] == "/var/lib/bgpnet/store.db"  # the input is not modified
