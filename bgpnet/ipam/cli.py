"""`bgpnet ipam ...`: show pools and blocks, add/list/delete pools, release addresses, run a gc pass."""

from __future__ import annotations

import json
from ipaddress import IPv4Address

from bgpnet.datastore.options import add_store_args, open_store
from bgpnet.errors import ConfigError
from bgpnet.ipam import store as ipam


def register(sub) -> None:
    p = sub.add_parser("ipam", help="IP pools, blocks and pod addresses")
    isub = p.add_subparsers(dest="ipam_command", metavar="SUBCOMMAND", required=True)

    s = isub.add_parser("show", help="pools, blocks with their nodes, usage")
    add_store_args(s)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_show)

    pool = isub.add_parser("pool", help="add, list or delete IP pools")
    psub = pool.add_subparsers(dest="pool_command", metavar="ACTION", required=True)
    a = psub.add_parser("add", help="add (or with --replace, change) a pool; overlapping or malformed pools are refused")
    add_store_args(a)
    a.add_argument("name")
    a.add_argument("--cidr", required=True, help="the pool, e.g. 10.244.0.0/16")
    a.add_argument("--block-size", type=int, default=26, help="prefix length of the blocks nodes claim (default 26)")
    a.add_argument("--encapsulation", default="none", help="none, ipip or vxlan (default none)")
    a.add_argument("--mode", default=None, help="Always, CrossSubnet or Never (default: Never without encapsulation)")
    a.add_argument("--nat-outgoing", action="store_true", help="masquerade traffic leaving the pools")
    a.add_argument("--node-selector", default="", help="nodes that may use the pool: k=v,k!=v,k,!k or all()")
    a.add_argument("--disabled", action="store_true", help="no new blocks or addresses from this pool")
    a.add_argument("--replace", action="store_true", help="overwrite an existing pool of that name")
    a.set_defaults(func=cmd_pool_add)
    ls = psub.add_parser("list", help="list pools")
    add_store_args(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_pool_list)
    d = psub.add_parser("delete", help="delete a pool (refused while addresses are allocated from it)")
    add_store_args(d)
    d.add_argument("name")
    d.set_defaults(func=cmd_pool_delete)

    r = isub.add_parser("release", help="release addresses: one IP, every address of a pod, or a handle")
    add_store_args(r)
    what = r.add_mutually_exclusive_group(required=True)
    what.add_argument("--ip", help="an address")
    what.add_argument("--pod", help="namespace/name")
    what.add_argument("--handle", help="a handle id")
    r.set_defaults(func=cmd_release)

    g = isub.add_parser("gc", help="one garbage-collection pass for a node")
    add_store_args(g)
    g.add_argument("--node", required=True)
    g.add_argument("--grace", type=float, default=300.0, help="seconds an empty block or orphan handle is kept")
    g.set_defaults(func=cmd_gc)


def cmd_show(args) -> int:
    store = open_store(args)
    pools, blocks = ipam.usage(store)
    if args.json:
        print(json.dumps({
            "pools": [{"name": p.name, **p.to_spec()} for p in pools],
            "blocks": [{"cidr": str(b.cidr), "pool": b.pool, "kind": b.kind, "node": b.node, "used": b.used,
                        "size": b.size, "borrowed": b.borrowed} for b in blocks],
        }, indent=2))
        return 0
    print(f"{'POOL':<16} {'CIDR':<18} {'BLOCK':>5} {'ENCAP':<6} {'MODE':<11} {'NAT':<4} {'STATE':<8} SELECTOR")
    for p in pools:
        print(f"{p.name:<16} {str(p.cidr):<18} {'/' + str(p.block_size):>5} {p.encapsulation:<6} {p.mode:<11} "
              f"{'yes' if p.nat_outgoing else 'no':<4} {'disabled' if p.disabled else 'enabled':<8} "
              f"{p.node_selector or 'all()'}")
    print()
    print(f"{'BLOCK':<20} {'NODE':<16} {'POOL':<16} {'USED':>9}  BORROWED")
    for b in blocks:
        borrowed = ", ".join(f"{n}:{c}" for n, c in sorted(b.borrowed.items())) or "-"
        print(f"{str(b.cidr):<20} {b.node or '-':<16} {b.pool or b.kind:<16} {f'{b.used}/{b.size}':>9}  {borrowed}")
    total = sum(p.cidr.num_addresses for p in pools)
    used = sum(b.used for b in blocks)
    print(f"\n{len(pools)} pool(s), {len(blocks)} block(s), {used} of {total} pool address(es) in use")
    return 0


def cmd_pool_add(args) -> int:
    spec = {"cidr": args.cidr, "block_size": args.block_size, "encapsulation": args.encapsulation,
            "nat_outgoing": args.nat_outgoing, "node_selector": args.node_selector, "disabled": args.disabled}
    if args.mode:
        spec["mode"] = args.mode
    pool = ipam.add_pool(open_store(args), args.name, spec, replace=args.replace)
    print(f"pool {pool.name} {pool.cidr} (blocks /{pool.block_size})")
    return 0


def cmd_pool_list(args) -> int:
    pools = sorted(ipam.load_pools(open_store(args)), key=lambda p: p.name)
    if args.json:
        print(json.dumps([{"name": p.name, **p.to_spec()} for p in pools], indent=2))
    else:
        for p in pools:
            print(f"{p.name} {p.cidr} /{p.block_size} {p.encapsulation} {p.mode}"
                  f"{' nat-outgoing' if p.nat_outgoing else ''}{' disabled' if p.disabled else ''}"
                  f"{' selector=' + p.node_selector if p.node_selector else ''}")
    return 0


def cmd_pool_delete(args) -> int:
    ipam.delete_pool(open_store(args), args.name)
    print(f"pool {args.name} deleted")
    return 0


def cmd_release(args) -> int:
    store = open_store(args)
    if args.ip:
        try:
            ip = IPv4Address(args.ip)
        except ValueError as e:
            raise ConfigError(f"{args.ip!r} is not an IPv4 address: {e}", "--ip") from None
        handle = ipam.release_ip(store, ip)
        print(f"released {ip} (handle {handle})" if handle else f"{ip} was not allocated")
        return 0
    freed = ipam.release_pod(store, args.pod) if args.pod else ipam.release_handle(store, args.handle)
    print(f"released {', '.join(map(str, freed))}" if freed else "nothing to release")
    return 0


def cmd_gc(args) -> int:
    res = ipam.gc(open_store(args), args.node, args.grace)
    print(f"released blocks: {', '.join(res.released_blocks) or '-'}; handles: {len(res.released_handles)}; "
          f"leaked addresses freed: {len(res.freed_leaks)}")
    return 0
