"""`bgpnet lab pod add/list/del` on one node namespace: pods get addresses and reach each other over TCP."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from bgpnet import ipam
from bgpnet.datastore.base import IPAM_HANDLE
from bgpnet.datastore.local import LocalDatastore
from bgpnet.errors import BgpnetError
from bgpnet.lab import pods
from bgpnet.lab.netns import Netns, wait_for
from tests.integration.test_cni import CLIENT, SERVER


def run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bgpnet lab")
    pods.register_pod_commands(p.add_subparsers(dest="lab_command", required=True))
    args = p.parse_args(argv)
    return args.func(args)


def test_lab_pods_add_list_del(netns_factory, tmp_path, capsys):
    store_path = str(tmp_path / "store.db")
    store = LocalDatastore(store_path)
    ipam.add_pool(store, "default", {"cidr": "10.244.0.0/24", "block_size": 28})
    netns_factory("n1")
    lab = netns_factory.prefix
    made = [pods.pod_netns(lab, p) for p in ("default/web", "default/client")]
    try:
        assert run(["pod", "add", lab, "n1", "default/web", "--labels", "app=web", "--ports", "http=8080/TCP",
                    "--store", store_path]) == 0
        assert run(["pod", "add", lab, "n1", "default/client", "--store", store_path]) == 0
        capsys.readouterr()
        assert run(["pod", "list", lab, "--json", "--store", store_path]) == 0
        listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
        assert listed["web"] == {"namespace": "default", "name": "web", "labels": {"app": "web"}, "node": "n1",
                                 "ip": listed["web"]["ip"], "netns": made[0],
                                 "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
        assert listed["client"]["netns"] == made[1] and listed["client"]["labels"] == {}
        web, client = Netns(made[0]), Netns(made[1])
        server = web.popen([sys.executable, "-c", SERVER, "8080"])
        try:
            out = wait_for(lambda: client.run(sys.executable, "-c", CLIENT, listed["web"]["ip"], "8080",
                                              check=False).strip(), timeout=20, what="TCP client -> web")
            assert out == f"hello {listed['client']['ip']}"
        finally:
            server.kill()
            server.wait()
        assert run(["pod", "del", lab, "default/web", "--store", store_path]) == 0
        assert not web.exists()
        assert run(["pod", "del", lab, "default/web", "--store", store_path]) == 0
        assert "no pod default/web" in capsys.readouterr().out
        assert [p["name"] for p in pods.list_pods(lab, store_path)] == ["client"]
        assert len(store.list(IPAM_HANDLE)) == 1
        # a pod the pool cannot serve: the error names the CNI failure and no namespace is left behind
        ipam.add_pool(store, "default", {"cidr": "10.244.0.0/24", "block_size": 28, "disabled": True},
                      replace=True)
        with pytest.raises(BgpnetError, match=r"CNI ADD for default/late .* \(code 100\): no enabled IP pool"):
            pods.add_pod(lab, "n1", "default/late", store=store_path)
        assert not Netns(pods.pod_netns(lab, "default/late")).exists()
        with pytest.raises(BgpnetError, match="node n9 of lab .* has no namespace"):
            pods.add_pod(lab, "n9", "default/x", store=store_path)
    finally:
        for name in made:
            Netns(name).delete()
