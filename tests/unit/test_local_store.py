"""The local SQLite store: CRUD, compare-and-swap, per-kind revisions, several processes at once."""

import multiprocessing

import pytest

from bgpnet.datastore.local import LocalDatastore
from bgpnet.errors import AlreadyExists, Conflict, NotFound


def test_crud_and_cas(tmp_path):
    s = LocalDatastore(tmp_path / "s.db")
    a = s.create("Node", "n1", {"x": 1})
    with pytest.raises(AlreadyExists):
        s.create("Node", "n1", {})
    b = s.update(a, {"x": 2})
    with pytest.raises(Conflict):
        s.update(a, {"x": 3})  # stale revision
    assert s.get("Node", "n1").spec == {"x": 2}
    with pytest.raises(Conflict):
        s.delete("Node", "n1", revision=a.revision)
    s.delete("Node", "n1", revision=b.revision)
    with pytest.raises(NotFound):
        s.delete("Node", "n1")
    assert s.get("Node", "n1") is None


def test_revisions_per_kind(tmp_path):
    s = LocalDatastore(tmp_path / "s.db")
    r_nodes, r_pods = s.revision(["Node"]), s.revision(["Pod"])
    s.put("Pod", "ns/a", {})
    assert s.revision(["Node"]) == r_nodes and s.revision(["Pod"]) != r_pods
    s.put("Node", "n1", {"a": 1})
    s.put("Node", "n1", {"a": 2})
    assert s.get("Node", "n1").spec == {"a": 2}
    assert [o.name for o in s.list("Node")] == ["n1"]


def _bump(path, n):
    s = LocalDatastore(path)
    for _ in range(n):
        while True:
            cur = s.get("Counter", "c")
            try:
                s.update(cur, {"n": cur.spec["n"] + 1})
                break
            except Conflict:
                continue


def test_cas_under_concurrent_processes(tmp_path):
    path = tmp_path / "s.db"
    LocalDatastore(path).create("Counter", "c", {"n": 0})
    procs = [multiprocessing.Process(target=_bump, args=(path, 50)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert LocalDatastore(path).get("Counter", "c").spec["n"] == 200
