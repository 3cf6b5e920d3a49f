"""Renderer and explain: NetworkPolicy semantics checked by walking the rendered chains (no root)."""

from __future__ import annotations

import copy
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgpnet.datastore.base import Object
from bgpnet.errors import ValidationError
from bgpnet.felix.policy import EGRESS, INGRESS, parse_policy
from bgpnet.felix.rules import (
    ACCEPT_MARK,
    FORWARD_CHAIN,
    FROM_POD_CHAIN,
    Chain,
    Cluster,
    ExplainError,
    Match,
    Packet,
    RenderCache,
    Rule,
    explain,
    explain_cluster,
    render,
    render_cluster,
    simulate,
)

NS = ("x", "y", "z")
PODS = ("a", "b", "c")


def ip(ns: str, p: str) -> str:
    return f"10.77.0.{(NS.index(ns) + 1) * 10 + PODS.index(p) + 1}"


def make_pods(nodes=("n1",)) -> dict:
    pods = {}
    for i, ns in enumerate(NS):
        for p in PODS:
            labels = {"pod": p} | ({"canary": "true"} if p == "c" else {})
            ports = [{"name": "http", "port": 81 if p == "c" else 80, "protocol": "TCP"},
                     {"name": "dns", "port": 53, "protocol": "UDP"}]
            pods[f"{ns}/{p}"] = {"node": nodes[i % len(nodes)], "ip": ip(ns, p), "labels": labels,
                                 "ports": ports, "interface": f"cali{ns}{p}"}
    return pods


NAMESPACES = {ns: {"labels": {"ns": ns}} for ns in NS}


def np(ns: str, name: str, spec: dict) -> tuple[str, dict]:
    return f"{ns}/{name}", {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def sel(**labels) -> dict:
    return {"matchLabels": labels}


def matrix(policies: dict, pods=None, port=80, protocol="TCP") -> dict:
    pods = pods or make_pods()
    cluster = Cluster(pods, NAMESPACES, policies)
    cache: dict = {}
    out = {}
    for s in pods:
        for d in pods:
            if s != d:
                out[(s, d)] = explain_cluster(cluster, s, d, port, protocol, rulesets=cache).allowed
    return out


def expect_matrix(pred, pods=None) -> dict:
    pods = pods or make_pods()
    return {(s, d): bool(pred(s, d)) for s in pods for d in pods if s != d}


def pols(*items) -> dict:
    return dict(items)


# ---------------------------------------------------------------------------------------------- semantics

def test_no_policy_everything_open():
    assert all(matrix({}).values())


def test_default_deny_selects_with_no_rules_and_empty_rule_allows_all():
    deny = np("x", "deny", {"podSelector": {}})
    assert matrix(pols(deny)) == expect_matrix(lambda s, d: not d.startswith("x/"))
    allow = np("x", "allow", {"podSelector": {}, "ingress": [{}]})
    assert all(matrix(pols(deny, allow)).values())


def test_selector_operators():
    p = pols(np("x", "p", {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "b"]}]},
                           "ingress": [{"from": [{"podSelector": {"matchExpressions": [
                               {"key": "canary", "operator": "Exists"}]}}]}]}),
             np("y", "q", {"podSelector": {"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]},
                           "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                               {"key": "ns", "operator": "NotIn", "values": ["x", "z"]}]}}]}]}))

    def pred(s, d):
        if d in ("x/a", "x/b"):
            return s == "x/c"
        if d in ("y/a", "y/b"):
            return s.startswith("y/")
        return True
    assert matrix(p) == expect_matrix(pred)


def test_not_in_matches_pods_without_the_label():
    p = pols(np("x", "p", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"podSelector": {
        "matchExpressions": [{"key": "canary", "operator": "NotIn", "values": ["true"]}]}}]}]}))
    assert matrix(p) == expect_matrix(lambda s, d: d != "x/a" or s == "x/b")


def test_namespace_and_pod_selector_in_one_peer_is_and_separate_peers_is_or():
    both = pols(np("x", "p", {"podSelector": sel(pod="a"), "ingress": [{"from": [
        {"namespaceSelector": sel(ns="y"), "podSelector": sel(pod="b")}]}]}))
    assert matrix(both) == expect_matrix(lambda s, d: d != "x/a" or s == "y/b")
    either = pols(np("x", "p", {"podSelector": sel(pod="a"), "ingress": [{"from": [
        {"namespaceSelector": sel(ns="y")}, {"podSelector": sel(pod="b")}]}]}))
    assert matrix(either) == expect_matrix(lambda s, d: d != "x/a" or s.startswith("y/") or s == "x/b")


def test_namespaces_carry_their_name_label_even_without_an_object():
    pods = make_pods()
    pods["w/a"] = {"node": "n1", "ip": "10.77.0.90", "labels": {"pod": "a"}, "interface": "caliwa"}
    p = pols(np("x", "p", {"podSelector": sel(pod="a"), "ingress": [{"from": [
        {"namespaceSelector": sel(**{"kubernetes.io/metadata.name": "w"})}]}]}))
    assert matrix(p, pods) == expect_matrix(lambda s, d: d != "x/a" or s == "w/a", pods)


def test_empty_namespace_selector_means_all_namespaces():
    p = pols(np("x", "p", {"podSelector": sel(pod="a"), "ingress": [{"from": [
        {"namespaceSelector": {}, "podSelector": sel(pod="b")}]}]}))
    assert matrix(p) == expect_matrix(lambda s, d: d != "x/a" or s.endswith("/b"))


@pytest.mark.parametrize("port,protocol,allowed", [(80, "TCP", True), (81, "TCP", False), (80, "UDP", False),
                                                   (90, "UDP", True), (99, "UDP", True), (100, "UDP", False),
                                                   (7, "SCTP", True), (8, "SCTP", False)])
def test_ports_protocols_and_end_port(port, protocol, allowed):
    p = pols(np("x", "p", {"podSelector": sel(pod="a"), "ingress": [{"ports": [
        {"port": 80}, {"protocol": "UDP", "port": 90, "endPort": 99}, {"protocol": "SCTP", "port": 7}]}]}))
    assert explain(make_pods(), NAMESPACES, p, "y/b", "x/a", port, protocol).allowed is allowed


def test_protocol_without_port_allows_every_port_of_it():
    p = pols(np("x", "p", {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"protocol": "UDP"}]}]}))
    assert explain(make_pods(), NAMESPACES, p, "y/b", "x/a", 12345, "UDP").allowed
    assert not explain(make_pods(), NAMESPACES, p, "y/b", "x/a", 12345, "TCP").allowed


def test_many_ports_are_split_into_multiport_chunks():
    ports = [{"port": 1000 + i} for i in range(20)] + [{"port": 2000, "endPort": 2010}]
    p = pols(np("x", "p", {"podSelector": sel(pod="a"), "ingress": [{"ports": ports}]}))
    rs = render(make_pods(), NAMESPACES, p, "n1")
    chain = next(c for c in rs.chains if c.name.startswith("BGPNET-PI-"))
    assert len(chain.rules) == 2
    for r in chain.rules:
        assert sum(1 if lo == hi else 2 for lo, hi in r.match.dports) <= 15
    for port, ok in ((1000, True), (1019, True), (1020, False), (2005, True), (2011, False)):
        assert explain(make_pods(), NAMESPACES, p, "y/b", "x/a", port).allowed is ok


def test_named_ports_resolve_per_destination_pod():
    p = pols(np("x", "p", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}))
    pods = make_pods()
    for dst, port in (("x/a", 80), ("x/b", 80), ("x/c", 81)):
        assert explain(pods, NAMESPACES, p, "y/a", dst, port).allowed
        assert not explain(pods, NAMESPACES, p, "y/a", dst, 161 - port).allowed
    # a name with the wrong protocol resolves to nothing
    assert not explain(pods, NAMESPACES, pols(np("x", "q", {"podSelector": {}, "ingress": [
        {"ports": [{"port": "http", "protocol": "UDP"}]}]})), "y/a", "x/a", 80, "UDP").allowed


def test_named_ports_in_egress_resolve_on_the_peer():
    p = pols(np("x", "p", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"], "egress": [
        {"to": [{"namespaceSelector": sel(ns="y")}], "ports": [{"port": "http"}]},
        {"ports": [{"port": "dns", "protocol": "UDP"}]}]}))
    pods = make_pods()
    assert explain(pods, NAMESPACES, p, "x/a", "y/c", 81).allowed
    assert not explain(pods, NAMESPACES, p, "x/a", "y/c", 80).allowed
    assert not explain(pods, NAMESPACES, p, "x/a", "z/a", 80).allowed
    assert explain(pods, NAMESPACES, p, "x/a", "z/a", 53, "UDP").allowed
    assert explain(pods, NAMESPACES, p, "x/a", "z/a", "dns", "UDP").allowed


def test_policy_types_explicit_and_inferred():
    assert parse_policy(np("x", "p", {"podSelector": {}})[1]).types == (INGRESS,)
    assert parse_policy(np("x", "p", {"podSelector": {}, "egress": []})[1]).types == (INGRESS,)
    inferred = parse_policy(np("x", "p", {"podSelector": {}, "egress": [{}]})[1])
    assert inferred.types == (INGRESS, EGRESS) and inferred.ingress == ()
    only_egress = parse_policy(np("x", "p", {"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]})[1])
    assert only_egress.types == (EGRESS,) and only_egress.ingress == ()


def test_egress_deny_does_not_block_replies_or_ingress():
    p = pols(np("x", "p", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"]}))
    assert matrix(p) == expect_matrix(lambda s, d: s != "x/a")
    rs = render(make_pods(), NAMESPACES, p, "n1")
    # a reply from x/a is ESTABLISHED and accepted before any policy chain
    verdict, _ = simulate(rs, FORWARD_CHAIN, Packet("calixa", "caliyb", ip("x", "a"), ip("y", "b"), "tcp", 5555,
                                                    ctstate="ESTABLISHED"))
    assert verdict == "ACCEPT"
    verdict, _ = simulate(rs, FORWARD_CHAIN, Packet("calixa", "caliyb", ip("x", "a"), ip("y", "b"), "tcp", 5555,
                                                    ctstate="INVALID"))
    assert verdict == "DROP"


def test_ip_block_with_except_and_whole_internet():
    p = pols(np("x", "p", {"podSelector": sel(pod="a"), "ingress": [{"from": [
        {"ipBlock": {"cidr": "10.77.0.16/28", "except": ["10.77.0.20/30"]}}]}]}),
        np("x", "q", {"podSelector": sel(pod="b"), "ingress": [{"from": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.77.0.32/27"]}}]}]}))
    assert matrix(p) == expect_matrix(
        lambda s, d: (s == "z/a" if d == "x/a" else s not in ("z/b", "z/c") if d == "x/b" else True))
    rs = render(make_pods(), NAMESPACES, p, "n1")
    members = {m for s in rs.ipsets if s.type == "hash:net" for m in s.members}
    assert {"0.0.0.0/1", "128.0.0.0/1", "10.77.0.32/27 nomatch", "10.77.0.16/28", "10.77.0.20/30 nomatch"} <= members


def test_ipv6_blocks_match_nothing_on_the_ipv4_datapath():
    p = pols(np("x", "p", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"ipBlock": {"cidr": "::/0"}}]}]}))
    assert matrix(p) == expect_matrix(lambda s, d: d != "x/a")


def test_several_policies_union():
    p = pols(np("x", "p1", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"namespaceSelector": sel(ns="y")}]}]}),
             np("x", "p2", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"podSelector": sel(pod="b")}]}]}))
    assert matrix(p) == expect_matrix(lambda s, d: d != "x/a" or s.startswith("y/") or s == "x/b")
    ex = explain(make_pods(), NAMESPACES, p, "x/b", "x/a", 80)
    assert ex.allowed and "x/p2 ingress rule 0" in str(ex)


def test_cross_node_egress_on_source_node_ingress_on_destination_node():
    pods = make_pods(nodes=("n1", "n2"))  # x on n1, y on n2, z on n1
    p = pols(np("x", "e", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"], "egress": [
        {"to": [{"namespaceSelector": sel(ns="y")}]}]}),
        np("y", "i", {"podSelector": sel(pod="b"), "ingress": [{"from": [{"podSelector": sel(pod="a")}]}]}))
    ex = explain(pods, NAMESPACES, p, "x/a", "y/b", 80)
    assert not ex.allowed
    assert "node n1" in ex.steps[0] and "allowed by x/e egress rule 0" in ex.steps[0]
    assert "node n2" in ex.steps[1] and "ingress denied" in ex.steps[1]
    assert explain(pods, NAMESPACES, p, "x/a", "y/a", 80).allowed
    assert not explain(pods, NAMESPACES, p, "x/a", "z/a", 80).allowed
    assert explain(pods, NAMESPACES, p, "y/a", "y/b", 80).allowed


def test_explain_names_policy_and_rule_and_errors():
    p = pols(np("x", "web", {"podSelector": sel(pod="a"), "ingress": [
        {"from": [{"podSelector": sel(pod="c")}]}, {"from": [{"namespaceSelector": sel(ns="y")}], "ports": [{"port": 80}]}]}))
    ex = explain(make_pods(), NAMESPACES, p, "y/c", "x/a", 80)
    assert ex.allowed and "x/web ingress rule 1" in str(ex) and "ALLOWED" in str(ex)
    ex = explain(make_pods(), NAMESPACES, p, "z/c", "x/a", 80)
    assert not ex.allowed and "no rule of x/web allows it" in str(ex)
    with pytest.raises(ExplainError, match="no pod 'x/q'"):
        explain(make_pods(), NAMESPACES, p, "x/a", "x/q", 80)
    with pytest.raises(ExplainError, match="no TCP container port named 'nope'"):
        explain(make_pods(), NAMESPACES, p, "x/b", "x/a", "nope")


# ---------------------------------------------------------------------------------------------- structure

def test_unknown_interface_and_spoofed_source_are_dropped():
    rs = render(make_pods(), NAMESPACES, {}, "n1")
    for pkt in (Packet("calirogue", "calixa", "10.77.0.99", ip("x", "a"), "tcp", 80),
                Packet("calixb", "calixa", "10.77.0.99", ip("x", "a"), "tcp", 80)):
        verdict, fired = simulate(rs, FORWARD_CHAIN, pkt)
        assert verdict == "DROP" and "fail closed" in fired[-1][1].comment
    verdict, _ = simulate(rs, "BGPNET-INPUT", Packet("calirogue", "", "10.77.0.99", "169.254.1.1", "tcp", 22))
    assert verdict == "DROP"
    verdict, _ = simulate(rs, "BGPNET-INPUT", Packet("calixa", "", ip("x", "a"), "169.254.1.1", "tcp", 22))
    assert verdict == "CONTINUE"  # a known pod talking to its node: not ours to police
    verdict, _ = simulate(rs, FORWARD_CHAIN, Packet("eth0", "eth1", "192.0.2.1", "192.0.2.2", "tcp", 80))
    assert verdict == "CONTINUE"  # not pod traffic: untouched


def test_pod_interface_prefix_agrees_with_the_cni_plugin():
    from bgpnet.cni import plugin
    from bgpnet.felix.rules import POD_INTERFACE_PREFIX

    assert plugin.HOST_IF_PREFIX == POD_INTERFACE_PREFIX


def test_hooks_chains_and_names():
    rs = render(make_pods(), NAMESPACES, pols(np("x", "p", {"podSelector": {}})), "n1")
    assert [(h.chain, h.rule.target) for h in rs.hooks] == [("FORWARD", "BGPNET-FORWARD"), ("INPUT", "BGPNET-INPUT")]
    assert all(c.name.startswith("BGPNET-") and len(c.name) <= 28 for c in rs.chains)
    assert all(s.name.startswith("BGPNET-") and len(s.name) <= 31 for s in rs.ipsets)
    tw = rs.chain("BGPNET-TW-calixa")
    assert tw.rules[0].action == "MARK" and tw.rules[-1].action == "REJECT"
    assert rs.chain("BGPNET-TW-caliya").rules[0].action == "RETURN"
    for c in rs.chains:
        for line in c.lines():
            assert line.startswith(f"-A {c.name} ") and '--comment "bgpnet:' in line


def test_deny_drop_mode_and_dispatch_split():
    rs = render(make_pods(), NAMESPACES, pols(np("x", "p", {"podSelector": {}})), "n1", deny="drop")
    assert rs.chain("BGPNET-TW-calixa").rules[-1].action == "DROP"
    pods = {f"x/p{i}": {"node": "n1", "ip": f"10.1.{i // 200}.{i % 200 + 1}", "labels": {},
                        "interface": f"cali{i:04x}"} for i in range(300)}
    rs = render(pods, {}, {}, "n1")
    root = rs.chain(FROM_POD_CHAIN)
    assert len(root.rules) < 10 and root.rules[0].action == "GOTO"
    verdict, fired = simulate(rs, FORWARD_CHAIN, Packet("cali012b", "eth0", "10.1.1.100", "192.0.2.1", "tcp", 80))
    assert verdict == "ACCEPT" and any(c == "BGPNET-FW-cali012b" for c, _ in fired)
    verdict, _ = simulate(rs, FORWARD_CHAIN, Packet("cali0fff", "eth0", "10.1.1.100", "192.0.2.1", "tcp", 80))
    assert verdict == "DROP"


def test_bad_objects_are_skipped_with_a_reason_and_others_still_render():
    pods = make_pods()
    pods["x/b"]["interface"] = "eth9"
    pods["x/c"]["interface"] = "calixa"
    pods["y/bad"] = {"node": "n1", "ip": "10.0.0.300", "interface": "caliybad"}
    p = pols(np("x", "good", {"podSelector": {}}),
             np("y", "bad", {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 70}]}]}),
             ("z/mismatch", {"metadata": {"name": "other", "namespace": "z"}, "spec": {}}))
    rs = render(pods, NAMESPACES, p, "n1")
    text = "\n".join(rs.errors)
    assert "y/bad" in text and "endPort 70 must be between port 80 and 65535" in text
    assert "Pod y/bad: ip: invalid ip '10.0.0.300'" in text
    assert "interface eth9 does not start with the pod interface prefix" in text
    assert "interface calixa already belongs to pod x/a" in text
    assert "z/mismatch: metadata says z/other" in text
    assert rs.chain("BGPNET-TW-calixa").rules[-1].action == "REJECT"
    assert [e.pod for e in rs.endpoints if e.pod.startswith("y/")] == ["y/a", "y/b", "y/c"]


def test_rule_hashes_depend_on_position_and_content():
    r1, r2 = Rule(Match(protocol="tcp"), "ACCEPT"), Rule(Match(protocol="udp"), "ACCEPT")
    a, b = Chain("BGPNET-X", (r1, r2)), Chain("BGPNET-X", (r2, r1))
    assert len(set(a.hashes)) == 2 and a.hashes != b.hashes
    assert Chain("BGPNET-X", (r1, r1)).hashes[0] != Chain("BGPNET-X", (r1, r1)).hashes[1]
    assert Chain("BGPNET-Y", (r1, r2)).hashes == a.hashes  # pod chains with equal rules share hashes
    assert Chain("BGPNET-X", (r1, r2)).hashes == a.hashes
    assert Chain("BGPNET-X", (r1, Rule(Match(protocol="udp"), "ACCEPT", comment="x"))).hashes[1] != a.hashes[1]


def test_mark_rules():
    rs = render(make_pods(), NAMESPACES, pols(np("x", "p", {"podSelector": {}, "ingress": [{}]})), "n1")
    chain = next(c for c in rs.chains if c.name.startswith("BGPNET-PI-"))
    assert chain.lines()[0].endswith(f"-j MARK --set-xmark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x}")
    assert rs.chain("BGPNET-TW-calixa").lines()[0].endswith(f"-j MARK --set-xmark 0x0/{ACCEPT_MARK:#x}")


# ---------------------------------------------------------------------------------------------- properties

POLICY_POOL = [
    np("x", "deny", {"podSelector": {}}),
    np("x", "web", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"podSelector": sel(pod="b")}],
                                                              "ports": [{"port": "http"}]}]}),
    np("y", "eg", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"ipBlock": {"cidr": "10.77.0.0/24", "except": ["10.77.0.11/32"]}}]}]}),
    np("z", "ns", {"podSelector": {"matchExpressions": [{"key": "canary", "operator": "Exists"}]},
                   "ingress": [{"from": [{"namespaceSelector": sel(ns="x")}]}]}),
    np("z", "bad", {"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}),
]


@settings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False), st.lists(st.integers(0, len(POLICY_POOL) - 1), max_size=5))
def test_render_depends_only_on_the_final_state(rnd: random.Random, chosen):
    pods = make_pods(nodes=("n1", "n2"))
    policies = dict(POLICY_POOL[i] for i in chosen)
    want = render(pods, NAMESPACES, policies, "n1")
    shuffled = list(pods.items())
    rnd.shuffle(shuffled)
    pol_items = list(policies.items())
    rnd.shuffle(pol_items)
    assert render(dict(shuffled), NAMESPACES, dict(pol_items), "n1") == want
    assert [c.hashes for c in render(dict(shuffled), NAMESPACES, dict(pol_items), "n1").chains] == \
        [c.hashes for c in want.chains]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["label", "policy", "drop-policy", "move", "delete-pod"]),
                          st.integers(0, 8), st.integers(0, len(POLICY_POOL) - 1)), max_size=12))
def test_cached_render_equals_cold_render_after_any_changes(steps):
    """The RenderCache must never leak state from an earlier render into a later one."""
    pods = make_pods()
    policies: dict = {}
    revs: dict = {}
    cache = RenderCache()
    keys = sorted(pods)

    def objs(kind, d):
        return [Object(kind, n, s, str(revs.setdefault((kind, n), 1))) for n, s in d.items()]

    for what, i, j in steps:
        key = keys[i]
        if what == "label" and key in pods:
            pods[key] = copy.deepcopy(pods[key])
            pods[key]["labels"]["pod"] = random.Random(i + j).choice(PODS)
            revs[("Pod", key)] = revs.get(("Pod", key), 1) + 1
        elif what == "move" and key in pods:
            pods[key] = dict(pods[key], node="n2" if pods[key]["node"] == "n1" else "n1")
            revs[("Pod", key)] = revs.get(("Pod", key), 1) + 1
        elif what == "delete-pod":
            pods.pop(key, None)
        elif what == "policy":
            name, spec = POLICY_POOL[j]
            policies[name] = spec
            revs[("NetworkPolicy", name)] = revs.get(("NetworkPolicy", name), 1) + 1
        else:
            policies.pop(POLICY_POOL[j][0], None)
        warm = render_cluster(Cluster(objs("Pod", pods), objs("Namespace", NAMESPACES),
                                      objs("NetworkPolicy", policies), cache), "n1")
        assert warm == render(pods, NAMESPACES, policies, "n1")


# ---------------------------------------------------------------------------------------------- validation

BASE = {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80}]}]}


@pytest.mark.parametrize("path,value,where,message", [
    (["podSelector", "matchExpressions"], [{"key": "a", "operator": "Within", "values": ["x"]}],
     "spec.podSelector.matchExpressions[0].operator", "must be In, NotIn, Exists or DoesNotExist"),
    (["podSelector", "matchExpressions"], [{"key": "a", "operator": "In"}],
     "matchExpressions[0].values", "needs at least one value"),
    (["podSelector", "matchExpressions"], [{"key": "a", "operator": "Exists", "values": ["x"]}],
     "matchExpressions[0].values", "takes no values"),
    (["podSelector", "matchLabels"], {"bad key!": "x"}, "matchLabels.bad key!", "invalid label key"),
    (["podSelector", "matchLabels"], {"a": "-x"}, "matchLabels.a", "invalid label value"),
    (["podSelector", "colour"], "red", "spec.podSelector.colour", "unknown field `colour`"),
    (["ingress", 0, "from", 0], {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}},
     "spec.ingress[0].from[0]", "ipBlock cannot be combined"),
    (["ingress", 0, "from", 0], {}, "spec.ingress[0].from[0]", "needs podSelector, namespaceSelector or ipBlock"),
    (["ingress", 0, "from", 0], {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}},
     "ipBlock.except[0]", "strictly inside cidr 10.0.0.0/8"),
    (["ingress", 0, "from", 0], {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}},
     "ipBlock.except[0]", "strictly inside"),
    (["ingress", 0, "from", 0], {"ipBlock": {"cidr": "10.0.0.300/8"}}, "ipBlock.cidr", "not a valid CIDR"),
    (["ingress", 0, "from", 0], {"ipBlock": {"cidr": "10.0.0.1"}}, "ipBlock.cidr", "missing /prefix length"),
    (["ingress", 0, "ports", 0], {"port": 80, "endPort": 79}, "ports[0].endPort", "must be between port 80"),
    (["ingress", 0, "ports", 0], {"port": "http", "endPort": 90}, "ports[0].endPort", "named port"),
    (["ingress", 0, "ports", 0], {"endPort": 90}, "ports[0].endPort", "endPort needs port"),
    (["ingress", 0, "ports", 0], {"port": 70000}, "ports[0].port", "out of range"),
    (["ingress", 0, "ports", 0], {"port": "Not_A_Name"}, "ports[0].port", "valid port name"),
    (["ingress", 0, "ports", 0], {"port": "80"}, "ports[0].port", "valid port name"),
    (["ingress", 0, "ports", 0], {"port": 80, "protocol": "ICMP"}, "ports[0].protocol", "TCP, UDP or SCTP"),
    (["policyTypes"], ["Inbound"], "spec.policyTypes[0]", "Ingress or Egress"),
    (["policyTypes"], ["Ingress", "Ingress"], "spec.policyTypes", "duplicate"),
    (["ingress", 0, "to"], [], "spec.ingress[0].to", "unknown field `to`"),
    (["egress"], [{"from": []}], "spec.egress[0].from", "unknown field `from`"),
])
def test_validation_names_the_field(path, value, where, message):
    spec = copy.deepcopy(BASE)
    node = spec
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(ValidationError) as e:
        parse_policy({"metadata": {"name": "p", "namespace": "x"}, "spec": spec}, "NetworkPolicy x/p")
    assert where in str(e.value) and message in str(e.value), str(e.value)
    assert str(e.value).startswith("NetworkPolicy x/p: ")


def test_validation_of_names_and_host_bits():
    with pytest.raises(ValidationError, match="metadata.name: 'Bad_Name' is not a valid DNS subdomain"):
        parse_policy({"metadata": {"name": "Bad_Name"}, "spec": {}})
    with pytest.raises(ValidationError, match="`spec` is required"):
        parse_policy({"metadata": {"name": "p"}})
    pol = parse_policy({"metadata": {"name": "p"}, "spec": {"ingress": [{"from": [
        {"ipBlock": {"cidr": "10.1.2.3/16"}}]}]}})
    assert pol.namespace == "default" and pol.ingress[0].peers[0].cidr == "10.1.0.0/16"
