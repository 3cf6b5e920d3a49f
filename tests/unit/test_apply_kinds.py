"""`bgpnet apply -f` takes bgpnet.io/v1 IPPool and BGPPeer objects, validated like the config file."""

import pytest

from bgpnet.cli import main
from bgpnet.datastore.local import LocalDatastore

POOL = """apiVersion: bgpnet.io/v1
kind: IPPool
metadata: {name: NAME}
spec: {cidr: CIDR, encapsulation: vxlan, mode: CrossSubnet}
"""


def apply(tmp_path, text, name="f.yaml"):
    f = tmp_path / name
    f.write_text(text)
    return main(["apply", "-f", str(f), "--store", str(tmp_path / "s.db")])


def test_pool_and_peer_stored(tmp_path, capsys):
    peer = "apiVersion: bgpnet.io/v1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {address: 10.0.0.1, asn: 65000}\n"
    assert apply(tmp_path, POOL.replace("NAME", "default").replace("CIDR", "10.244.0.0/16") + "---\n" + peer) == 0
    store = LocalDatastore(tmp_path / "s.db")
    assert store.get("IPPool", "default").spec["mode"] == "CrossSubnet"
    assert store.get("BGPPeer", "tor").spec == {"address": "10.0.0.1", "asn": 65000}


@pytest.mark.parametrize("text, message", [
    (POOL.replace("NAME", "b").replace("CIDR", "10.244.8.0/24"), "overlaps pool a (10.244.0.0/16)"),
    (POOL.replace("NAME", "b").replace("CIDR", "10.99.0.5/16"), "spec.cidr"),
    ("apiVersion: bgpnet.io/v1\nkind: BGPPeer\nmetadata: {name: p}\nspec: {address: 10.0.0.1, asn: 1, hold_tme: 3}\n",
     "spec.hold_tme: unknown field"),
])
def test_bad_objects_rejected_nothing_changed(tmp_path, capsys, text, message):
    assert apply(tmp_path, POOL.replace("NAME", "a").replace("CIDR", "10.244.0.0/16"), "a.yaml") == 0
    before = LocalDatastore(tmp_path / "s.db").revision()
    assert apply(tmp_path, text) == 2
    assert message in capsys.readouterr().err
    assert LocalDatastore(tmp_path / "s.db").revision() == before
