"""Several processes allocate and release against one local store file at once: no address or block twice."""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter
from ipaddress import IPv4Address

from bgpnet import ipam
from bgpnet.datastore.base import BLOCK_AFFINITY, IPAM_BLOCK, IPAM_HANDLE
from bgpnet.datastore.local import LocalDatastore
from bgpnet.ipam.block import Block

PROCS = 6  # two processes per node: same-node claims race too
PER_PROC = 25


def worker(path: str, node: str, tag: str, start, out) -> None:
    store = LocalDatastore(path)
    start.wait()
    got = []
    for i in range(PER_PROC):
        h = f"{tag}-{i}"
        got.append((h, str(ipam.auto_assign(store, node, h, f"default/{h}"))))
        if i % 5 == 4:  # release some as we go so freed addresses get handed out again
            ipam.release_handle(store, got.pop(0)[0])
    out.put((tag, got))


def test_concurrent_processes_never_share_an_address_or_block(tmp_path):
    path = str(tmp_path / "store.db")
    store = LocalDatastore(path)
    # /28 blocks: 25 pods per process overflow several blocks, so nodes claim while others claim too
    ipam.add_pool(store, "default", {"cidr": "10.244.0.0/22", "block_size": 28})
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(path, f"n{i % 3}", f"p{i}", start, out)) for i in range(PROCS)]
    for p in procs:
        p.start()
    start.set()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    held = {h: IPv4Address(ip) for got in results.values() for h, ip in got}
    assert len(held) == PROCS * (PER_PROC - PER_PROC // 5)
    dup = [ip for ip, n in Counter(held.values()).items() if n > 1]
    assert not dup, f"addresses handed out twice: {dup}"
    blocks = [Block.from_spec(o.spec) for o in store.list(IPAM_BLOCK)]
    assert len({b.cidr for b in blocks}) == len(blocks)
    # what the store records equals what the callers were given, and each address is in its node's block
    in_blocks = {h: b.ip(o) for b in blocks for o, h in b.allocations.items()}
    assert in_blocks == held
    handles = {o.name: o.spec for o in store.list(IPAM_HANDLE)}
    assert {h: IPv4Address(s["ip"]) for h, s in handles.items()} == held
    for b in blocks:
        for o, h in b.allocations.items():
            assert b.affinity == handles[h]["node"], f"{b.ip(o)} of {h} is in block {b.cidr} of {b.affinity}"
    affinities = Counter(o.spec["block"] for o in store.list(BLOCK_AFFINITY))
    assert all(n == 1 for n in affinities.values()) and set(affinities) == {str(b.cidr) for b in blocks}
