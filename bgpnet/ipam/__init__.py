"""IPAM: pools, blocks with node affinity, pod address allocation; pure core in `block`, store writes in `store`."""

from bgpnet.ipam.block import Block, NoAddressAvailable, NoPool, Pool
from bgpnet.ipam.store import (
    IPAM_KINDS,
    GcResult,
    add_pool,
    auto_assign,
    delete_pool,
    gc,
    node_prefixes,
    release_handle,
    release_ip,
    release_pod,
)

__all__ = ["IPAM_KINDS", "Block", "GcResult", "NoAddressAvailable", "NoPool", "Pool", "add_pool", "auto_assign",
           "delete_pool", "gc", "node_prefixes", "release_handle", "release_ip", "release_pod"]
