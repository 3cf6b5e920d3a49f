"""conf/kubernetes/*.yaml checked without kubectl: Kubernetes' own JSON schemas (kubernetes-validate,
strict: unknown fields are errors), CRD schemas, example resources against them, RBAC and DaemonSet shape."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from bgpnet.config import AgentConfig, build
from bgpnet.datastore.kubernetes import RESOURCES
from tests.k8s_emulator import prune

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf/kubernetes"
K8S_VERSION = "1.30"


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CONF / name).read_text()) if d]


def one(kind: str) -> dict:
    (found,) = [d for d in docs("bgpnet.yaml") if d["kind"] == kind]
    return found


@pytest.mark.parametrize("name", ["bgpnet.yaml", "crds.yaml"])
def test_every_object_validates_against_the_kubernetes_schema(name):
    for doc in docs(name):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_schema_check_catches_a_typo():
    ds = copy.deepcopy(one("DaemonSet"))
    ds["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def crds() -> dict[str, dict]:
    return {d["spec"]["names"]["kind"]: d for d in docs("crds.yaml")}


def test_a_crd_for_every_custom_kind():
    custom = {r.kind: r for r in RESOURCES.values() if r.custom}
    assert set(crds()) == set(custom)
    for kind, crd in crds().items():
        res = custom[kind]
        assert crd["metadata"]["name"] == f"{res.plural}.{res.group}"
        assert (crd["spec"]["group"], crd["spec"]["names"]["plural"], crd["spec"]["scope"]) == (
            res.group, res.plural, "Cluster")
        (version,) = crd["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == (res.version, True, True)


def _structural(schema: dict, where: str) -> None:
    """The API server's structural-schema rule: every node says its type (or preserves unknown fields)."""
    assert "type" in schema or schema.get("x-kubernetes-preserve-unknown-fields"), where
    for key, sub in (schema.get("properties") or {}).items():
        _structural(sub, f"{where}.{key}")
    if isinstance(schema.get("items"), dict):
        _structural(schema["items"], f"{where}[]")


@pytest.mark.parametrize("kind", sorted(crds()))
def test_crd_schema_is_structural_and_valid_json_schema(kind):
    schema = crds()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.Draft4Validator.check_schema(schema)
    _structural(schema, kind)
    # bgpnet stores its spec verbatim: fields the schema does not list must survive pruning.
    assert schema["properties"]["spec"].get("x-kubernetes-preserve-unknown-fields") is True


def test_examples_validate_against_their_crds():
    by_kind = crds()
    examples = docs("examples.yaml")
    assert {e["kind"] for e in examples} <= set(by_kind)
    for example in examples:
        schema = by_kind[example["kind"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        body = {k: v for k, v in example.items() if k not in ("apiVersion", "kind", "metadata")}
        jsonschema.Draft4Validator(schema).validate(body)
        assert prune(body, schema) == body
    bad = {"spec": {"cidr": "10.0.0.0/16", "block_size": 8}}
    with pytest.raises(jsonschema.ValidationError, match="8 is less than the minimum of 20"):
        jsonschema.Draft4Validator(by_kind["IPPool"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]).validate(bad)


def test_rbac_is_least_privilege():
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in one("ClusterRole")["rules"]}
    read = {"get", "list", "watch"}
    assert rules[(("",), ("pods", "namespaces"))] == read
    assert rules[(("",), ("nodes",))] == read | {"patch"}  # annotations only; RBAC cannot say so
    assert rules[(("networking.k8s.io",), ("networkpolicies",))] == read
    custom = tuple(r.plural for r in RESOURCES.values() if r.custom)
    assert rules[(("bgpnet.io",), custom)] == read | {"create", "update", "patch", "delete"}
    assert len(rules) == 4
    assert all("*" not in v for v in rules.values())
    binding = one("ClusterRoleBinding")
    sa = one("ServiceAccount")
    assert binding["roleRef"]["name"] == one("ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": sa["metadata"]["namespace"]}]


def test_daemonset_shape():
    ds = one("DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    (agent,) = pod["containers"]
    assert agent["securityContext"]["privileged"] is True
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    volumes = {v["name"]: v for v in pod["volumes"]}
    (init,) = pod["initContainers"]
    mounts = {m["mountPath"]: volumes[m["name"]] for m in init["volumeMounts"]}
    assert mounts["/host/opt/cni/bin"]["hostPath"]["path"] == "/opt/cni/bin"
    assert mounts["/host/etc/cni/net.d"]["hostPath"]["path"] == "/etc/cni/net.d"
    assert mounts["/etc/bgpnet"]["configMap"]["name"] == one("ConfigMap")["metadata"]["name"]


def test_configmap_holds_a_valid_agent_config_and_conflist():
    data = one("ConfigMap")["data"]
    cfg = build(AgentConfig, yaml.safe_load(data["agent.yaml"]), "agent.yaml")
    assert cfg.datastore.type == "kubernetes"
    conflist = json.loads(data["10-bgpnet.conflist"])
    assert conflist["plugins"][0]["type"] == "bgpnet-cni"


def test_install_cni_script_runs(tmp_path):
    """Run the init container's script with its paths moved under tmp_path (no container, same sh)."""
    (script,) = one("DaemonSet")["spec"]["template"]["spec"]["initContainers"][0]["args"]
    root = tmp_path
    sa = root / "sa"
    sa.mkdir()
    (sa / "ca.crt").write_text("CA")
    (sa / "token").write_text("TOKEN")
    for d in ("host/opt/cni/bin", "host/etc/cni/net.d", "etc/bgpnet", "bin"):
        (root / d).mkdir(parents=True)
    (root / "etc/bgpnet/10-bgpnet.conflist").write_text(one("ConfigMap")["data"]["10-bgpnet.conflist"])
    plugin = root / "bin/bgpnet-cni"
    plugin.write_text("#!/bin/sh\necho plugin\n")
    plugin.chmod(0o755)
    script = (script.replace("/host/", f"{root}/host/").replace("/var/run/secrets/kubernetes.io/serviceaccount", str(sa))
              .replace("/etc/bgpnet/", f"{root}/etc/bgpnet/").replace("/opt/bgpnet/", f"{root}/opt/bgpnet/"))
    env = {"PATH": f"{root}/bin:/usr/bin:/bin", "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    subprocess.run(["/bin/sh", "-ec", script], check=True, env=env, timeout=30)
    assert (root / "host/opt/cni/bin/bgpnet-cni").read_text() == plugin.read_text()
    kubeconfig = yaml.safe_load((root / "host/etc/cni/net.d/bgpnet-kubeconfig").read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://10.96.0.1:443"
    assert kubeconfig["users"][0]["user"]["token"] == "TOKEN"
    assert (root / "host/etc/cni/net.d/bgpnet-kubeconfig").stat().st_mode & 0o077 == 0
    assert json.loads((root / "host/etc/cni/net.d/10-bgpnet.conflist").read_text())["name"] == "bgpnet"


def test_examples_are_accepted_by_the_agent_validators():
    """The CRD examples must mean what the agent reads: IPAM's pool rules and the peer config fields."""
    from pathlib import Path as _P

    import yaml

    from bgpnet.config import PeerConfig, build
    from bgpnet.ipam.block import Pool

    docs = list(yaml.safe_load_all((_P(__file__).resolve().parents[2] / "conf/kubernetes/examples.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs if d}
    Pool.from_spec(kinds["IPPool"]["metadata"]["name"], kinds["IPPool"]["spec"])
    peer = build(PeerConfig, kinds["BGPPeer"]["spec"])
    assert peer.node_selector == {"rack": "r1"}
