"""Lab pod command arguments: labels, ports, pod names, the network config handed to the plugin."""

from __future__ import annotations

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


def test_layout_defaults_and_lab_state():
    assert pods.node_netns("lab1", "n1") == "lab1-n1"
    assert pods.node_netns("lab1", "n1", {"nodes": {"n1": {"netns": "x-n1"}}}) == "x-n1"
    assert pods.store_path("lab1", None) == "/run/bgpnet-lab/lab1/store.db"
    assert pods.store_path("lab1", None, {"datastore": {"path": "/tmp/s.db"}}) == "/tmp/s.db"
    assert pods.store_path("lab1", "/x.db", {"store": "/tmp/s.db"}) == "/x.db"
    assert pods.pod_netns("lab1", "default/web") == "lab1-pod-default-web"
    conf = pods.network_config("/s.db", "n1", {"app": "web"}, [])
    assert conf["ipam"] == {"type": "bgpnet", "datastore": {"type": "local", "path": "/s.db"}, "node": "n1",
                            "mode": "blocks"}
    assert conf["args"] == {"bgpnet": {"labels": {"app": "web"}, "ports": []}}
