"""Lab pod command arguments: labels, ports, pod names, the network config handed to the plugin."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bgpnet.errors import ConfigError
from bgpnet.lab import pods


def test_parse_labels_and_ports():
    assert pods.parse_labels("app=web, tier=front") == {"app": "web", "tier": "front"}
    assert pods.parse_labels("") == {}
    assert pods.parse_ports("http=80/TCP,dns=53/udp,metrics=9090") == [
        {"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "metrics", "port": 9090, "protocol": "TCP"}]


@pytest.mark.parametrize("fn, text, words", [
    (pods.parse_labels, "app", "is not key=value"),
    (pods.parse_ports, "http=80/ICMP", "protocol must be TCP, UDP or SCTP"),
    (pods.parse_ports, "http=99999", "is not a port number"),
    (pods.parse_ports, "80/TCP", "is not name=PORT"),
    (pods.parse_pod_name, "web", "is not NAMESPACE/NAME"),
    (pods.parse_pod_name, "a/b/c", "is not NAMESPACE/NAME"),
])
def test_bad_arguments_are_named(fn, text, words):
    with pytest.raises(ConfigError, match=words):
        fn(text)


def test_layout_from_the_running_lab_or_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("BGPNET_LAB_DIR", str(tmp_path / "labs"))
    assert pods.open_lab("nolab") is None
    assert pods.node_netns("lab1", "n1") == "lab1-n1"
    assert pods.store_path("lab1", None) == str(tmp_path / "labs" / "lab1" / "store.db")
    assert pods.store_path("lab1", "/x.db") == "/x.db"
    conf = tmp_path / "n1.yaml"
    conf.write_text("node: {name: n1, address: 10.0.0.11/24}\ndatastore: {type: local, path: /lab/ds/store.db}\n")
    running = SimpleNamespace(nodes={
        "tor": SimpleNamespace(role="frr", config="", netns=SimpleNamespace(name="x-tor")),
        "n1": SimpleNamespace(role="bgpnet", config=str(conf), netns=SimpleNamespace(name="x-n1"))})
    assert pods.node_netns("lab1", "n1", running) == "x-n1"
    assert pods.store_path("lab1", None, running) == "/lab/ds/store.db"
    assert pods.pod_netns("lab1", "default/web") == "lab1-pod-default-web"
    conf = pods.network_config("/s.db", "n1", {"app": "web"}, [])
    assert conf["ipam"] == {"type": "bgpnet", "datastore": {"type": "local", "path": "/s.db"}, "node": "n1",
                            "mode": "blocks"}
    assert conf["args"] == {"bgpnet": {"labels": {"app": "web"}, "ports": []}}
