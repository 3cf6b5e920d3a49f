"""`bgpnet apply/delete -f` and `bgpnet policy explain/show`, run in-process against a local store."""

from __future__ import annotations

import textwrap

import pytest

from bgpnet.cli import main
from bgpnet.datastore.local import LocalDatastore
from bgpnet.errors import ValidationError
from bgpnet.felix.objects import (
    lab_apply,
    parse_labels_arg,
    parse_manifests,
    parse_ports_arg,
    register_kind,
)

GOOD = textwrap.dedent("""\
    apiVersion: v1
    kind: Namespace
    metadata: {name: x, labels: {team: red}}
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: allow-b, namespace: x}
    spec:
      podSelector: {matchLabels: {pod: a}}
      ingress:
      - from: [{podSelector: {matchLabels: {pod: b}}}]
        ports: [{port: http}]
    ---
    """)

BAD = textwrap.dedent("""\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: bad, namespace: x}
    spec:
      podSelector: {}
      ingress: [{ports: [{port: 80, endPort: 10}]}]
    ---
    apiVersion: v1
    kind: Namespace
    metadata: {name: Y_}
    ---
    apiVersion: v1
    kind: Secret
    metadata: {name: s}
    """)


@pytest.fixture
def store(tmp_path):
    s = LocalDatastore(tmp_path / "store.db")
    for i, p in enumerate("abc"):
        s.put("Pod", f"x/{p}", {"node": "n1", "ip": f"10.0.0.{i + 1}", "labels": {"pod": p}, "interface": f"calix{p}",
                                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    return s


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_apply_stores_objects_and_is_idempotent(tmp_path, store, capsys):
    f = tmp_path / "good.yaml"
    f.write_text(GOOD)
    db = str(tmp_path / "store.db")
    rc, out, _ = run(capsys, "apply", "-f", str(f), "--store", db)
    assert rc == 0 and out.splitlines() == ["namespace x created", "networkpolicy x/allow-b created"]
    assert store.get("Namespace", "x").spec == {"labels": {"team": "red"}}
    pol = store.get("NetworkPolicy", "x/allow-b").spec
    assert pol["metadata"] == {"name": "allow-b", "namespace": "x"} and pol["spec"]["ingress"][0]["ports"] == [{"port": "http"}]
    rc, out, _ = run(capsys, "apply", "-f", str(f), "--store", db)
    assert out.splitlines() == ["namespace x unchanged", "networkpolicy x/allow-b unchanged"]
    rc, out, _ = run(capsys, "delete", "-f", str(f), "--store", db)
    assert rc == 0 and store.get("NetworkPolicy", "x/allow-b") is None
    rc, out, _ = run(capsys, "delete", "-f", str(f), "--store", db)
    assert rc == 1 and "not found" in out
    rc, out, _ = run(capsys, "delete", "-f", str(f), "--store", db, "--ignore-not-found")
    assert rc == 0 and out == ""


def test_apply_rejects_every_bad_document_and_stores_nothing(tmp_path, store, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text(GOOD + BAD)
    rc, out, err = run(capsys, "apply", "-f", str(f), "--store", str(tmp_path / "store.db"))
    assert rc == 2 and out == ""
    assert "nothing was changed" in err
    assert f"{f} document 3 (NetworkPolicy bad): spec.ingress[0].ports[0].endPort: endPort 10 must be between" in err
    assert f"{f} document 4 (Namespace Y_): metadata.name: 'Y_' is not a valid DNS label" in err
    assert "document 5 (Secret s): kind: unsupported kind 'Secret'" in err
    assert store.get("Namespace", "x") is None and store.list("NetworkPolicy") == []


@pytest.mark.parametrize("text,message", [
    ("a: [", "not valid YAML"),
    ("", "no objects found"),
    ("- 1\n- 2\n", "expected a Kubernetes object, got list"),
    ("apiVersion: v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {}\n",
     "apiVersion must be networking.k8s.io/v1, got 'v1'"),
    ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nspec: {}\n", "`metadata` (with name) is required"),
    (GOOD + GOOD, "namespace x appears twice"),
])
def test_manifest_errors(text, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_manifests(text, "f.yaml")


def test_list_kind_default_namespace_and_extensible_kinds():
    from bgpnet.felix.objects import HANDLERS, StoredObject

    register_kind("Widget", lambda doc, where: StoredObject("Widget", doc["metadata"]["name"], {}))
    try:
        objs = parse_manifests(textwrap.dedent("""\
            apiVersion: v1
            kind: List
            items:
            - apiVersion: networking.k8s.io/v1
              kind: NetworkPolicy
              metadata: {name: p}
              spec: {podSelector: {}}
            - apiVersion: example/v1
              kind: Widget
              metadata: {name: w}
            """), "f.yaml")
        assert [(o.kind, o.name) for o in objs] == [("NetworkPolicy", "default/p"), ("Widget", "w")]
    finally:
        HANDLERS.pop("Widget")


def test_explain_and_show(tmp_path, store, capsys):
    f = tmp_path / "good.yaml"
    f.write_text(GOOD.replace("port: http", "port: http, protocol: TCP"))
    db = str(tmp_path / "store.db")
    assert run(capsys, "apply", "-f", str(f), "--store", db)[0] == 0
    rc, out, _ = run(capsys, "policy", "explain", "--from", "x/b", "--to", "x/a", "--port", "8080", "--store", db)
    assert rc == 0 and out.splitlines()[0] == "x/b -> x/a port 8080/TCP: ALLOWED"
    assert "allowed by x/allow-b ingress rule 0: pods [pod=b] in namespace x, port http/TCP" in out
    rc, out, _ = run(capsys, "policy", "explain", "--from", "x/c", "--to", "x/a", "--port", "http",
                     "--protocol", "tcp", "--store", db)
    assert "x/c -> x/a port 8080/TCP: DENIED" in out and "no rule of x/allow-b allows it" in out
    rc, out, err = run(capsys, "policy", "explain", "--from", "x/c", "--to", "q/a", "--port", "80", "--store", db)
    assert rc == 2 and "no pod 'q/a'" in err
    rc, out, _ = run(capsys, "policy", "show", "n1", "--desired", "--rules", "--store", db)
    assert rc == 0
    assert "pod x/a ip 10.0.0.1 interface calixa" in out and "ingress BGPNET-TW-calixa: policies x/allow-b" in out
    assert "egress  BGPNET-FW-calixa: open (no policy selects this pod)" in out
    assert "-A BGPNET-TW-calixa" in out and "ipset BGPNET-S-" in out


def test_lab_apply_and_arg_helpers(tmp_path):
    f = tmp_path / "good.yaml"
    f.write_text(GOOD)
    db = tmp_path / "lab.db"
    assert lab_apply(db, f) == ["namespace x created", "networkpolicy x/allow-b created"]

    class Lab:
        store_path = db
    assert lab_apply(Lab(), f, delete=True) == ["namespace x deleted", "networkpolicy x/allow-b deleted"]
    assert parse_labels_arg("app=web, tier=fe") == {"app": "web", "tier": "fe"}
    assert parse_ports_arg("http=80/TCP,dns=53/udp,x=9") == [
        {"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "x", "port": 9, "protocol": "TCP"}]
    with pytest.raises(ValidationError, match="--ports: 'http=99999' is not NAME=PORT"):
        parse_ports_arg("http=99999")
    with pytest.raises(ValidationError, match="is not KEY=VALUE"):
        parse_labels_arg("app")
