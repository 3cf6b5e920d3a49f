"""Name mapping and object conversion of the Kubernetes datastore (pure functions)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bgpnet.datastore.base import IPAM_BLOCK, NETWORK_POLICY, NODE
from bgpnet.datastore.kubernetes import (
    ANN_NAME,
    RESOURCES,
    custom_body,
    k8s_name,
    node_annotations,
    node_spec,
    policy_body,
    policy_spec,
    split_name,
    to_object,
)

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@pytest.mark.parametrize("name,expected", [
    ("default", "default"),
    ("tor-rack1", "tor-rack1"),
    ("10.244.0.64/26", "10-244-0-64-26"),
    ("n1/10.244.0.64/26", "n1-10-244-0-64-26"),
    ("kube-system/web-0", "kube-system-web-0"),
    ("ToR_A", "tor-a"),
])
def test_k8s_name_examples(name, expected):
    assert k8s_name(name) == expected


@given(st.text(min_size=1, max_size=400).filter(lambda s: s.strip() != ""))
def test_any_name_maps_to_a_valid_kubernetes_name_and_back(name):
    out = k8s_name(name)
    assert DNS_SUBDOMAIN.match(out) and len(out) <= 253
    res = RESOURCES[IPAM_BLOCK]
    body = custom_body(res, name, {"cidr": "x"}, revision="7")
    assert body["metadata"]["name"] == out
    assert (ANN_NAME in body["metadata"].get("annotations", {})) == (out != name)
    obj = to_object(res, body)
    assert (obj.name, obj.spec, obj.revision) == (name, {"cidr": "x"}, "7")


def test_long_names_keep_a_hash_so_they_stay_distinct():
    a, b = "x" * 300 + "/a", "x" * 300 + "/b"
    assert k8s_name(a) != k8s_name(b)
    assert len(k8s_name(a)) <= 253


def test_split_name_rejects_a_name_without_namespace():
    assert split_name("web/allow") == ("web", "allow")
    for bad in ("allow", "/allow", "web/", "a/b/c"):
        with pytest.raises(ValueError, match="namespace/name"):
            split_name(bad)


def test_node_annotations_round_trip_through_node_spec():
    spec = {"address": "10.0.0.1/24", "asn": 64512, "router_id": "10.0.0.1", "tunnel_address": "10.244.1.1",
            "labels": {"ignored": "1"}, "pod_cidr": "ignored"}
    ann = node_annotations(spec)
    assert ann["bgpnet.io/bgp-address"] == "10.0.0.1/24" and ann["bgpnet.io/asn"] == "64512"
    node = {"metadata": {"name": "n1", "labels": {"rack": "r1"}, "annotations": {k: v for k, v in ann.items() if v}},
            "spec": {"podCIDR": "10.244.1.0/24"}}
    back = node_spec(node)
    assert (back["address"], back["asn"], back["router_id"], back["tunnel_address"]) == (
        "10.0.0.1/24", 64512, "10.0.0.1", "10.244.1.1")
    assert back["labels"] == {"rack": "r1"} and back["pod_cidr"] == "10.244.1.0/24"
    assert node_annotations({"address": "10.0.0.1/24"})["bgpnet.io/asn"] is None  # removes a stale one


def test_node_without_annotations_uses_internal_ip_and_bad_asn_is_none():
    node = {"metadata": {"name": "n1", "annotations": {"bgpnet.io/asn": "not-a-number"}},
            "status": {"addresses": [{"type": "ExternalIP", "address": "203.0.113.5"},
                                     {"type": "InternalIP", "address": "192.0.2.7"}]}}
    spec = node_spec(node)
    assert (spec["address"], spec["asn"], spec["pod_cidr"]) == ("192.0.2.7", None, None)
    assert to_object(RESOURCES[NODE], {**node, "metadata": {**node["metadata"], "resourceVersion": "9"}}).revision == "9"


def test_network_policy_drops_server_metadata_and_round_trips():
    raw = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": "p", "namespace": "web", "uid": "u", "resourceVersion": "5", "generation": 1,
                        "creationTimestamp": "t", "managedFields": [{}], "labels": {"a": "b"},
                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
           "spec": {"podSelector": {}}}
    spec = policy_spec(raw)
    assert spec == {"metadata": {"name": "p", "namespace": "web", "labels": {"a": "b"}}, "spec": {"podSelector": {}}}
    body = policy_body("web/p", spec, revision="5")
    assert body["metadata"] == {"name": "p", "namespace": "web", "labels": {"a": "b"}, "resourceVersion": "5"}
    assert to_object(RESOURCES[NETWORK_POLICY], body).spec == spec
