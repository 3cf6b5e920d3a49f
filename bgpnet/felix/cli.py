"""`bgpnet apply|delete -f FILE` and `bgpnet policy explain|show|sync|cleanup`."""

from __future__ import annotations

from bgpnet.datastore.base import NAMESPACE, NETWORK_POLICY, POD
from bgpnet.datastore.options import add_store_args as _add_datastore
from bgpnet.datastore.options import open_store as _store


def register(sub) -> None:
    p = sub.add_parser("apply", help="store Namespace, NetworkPolicy, IPPool, BGPPeer objects from YAML")
    p.add_argument("-f", "--filename", dest="files", action="append", required=True, metavar="FILE",
                   help="multi-document YAML file ('-' for stdin); repeatable")
    _add_datastore(p)
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("delete", help="delete the objects named in Kubernetes YAML")
    p.add_argument("-f", "--filename", dest="files", action="append", required=True, metavar="FILE")
    p.add_argument("--ignore-not-found", action="store_true", help="say nothing about absent objects")
    _add_datastore(p)
    p.set_defaults(func=cmd_delete)

    pol = sub.add_parser("policy", help="NetworkPolicy tools: explain, show, sync, cleanup")
    psub = pol.add_subparsers(dest="policy_command", metavar="COMMAND", required=True)

    p = psub.add_parser("explain", help="would a connection be allowed, and which policy rule decides")
    p.add_argument("--from", dest="src", required=True, metavar="NS/POD")
    p.add_argument("--to", dest="dst", required=True, metavar="NS/POD")
    p.add_argument("--port", required=True, help="destination port number or container port name")
    p.add_argument("--protocol", default="TCP", type=str.upper, choices=("TCP", "UDP", "SCTP"))
    _add_datastore(p)
    p.set_defaults(func=cmd_explain)

    p = psub.add_parser("show", help="the chains programmed for each pod of NODE (compared with the kernel)")
    p.add_argument("node")
    p.add_argument("--desired", action="store_true",
                   help="only what the renderer wants; do not read this host's iptables")
    p.add_argument("--rules", action="store_true", help="print every rule, not only the chain summary")
    _add_datastore(p)
    p.set_defaults(func=cmd_show)

    p = psub.add_parser("sync", help="render NODE's policy from the datastore and program this host once")
    p.add_argument("node")
    _add_datastore(p)
    p.set_defaults(func=cmd_sync)

    p = psub.add_parser("cleanup", help="remove every BGPNET-* chain, hook rule and ipset from this host")
    p.set_defaults(func=cmd_cleanup)


def cmd_apply(args) -> int:
    from bgpnet.felix.objects import apply_objects, parse_manifests, read_source

    store = _store(args)
    # Validate every file before storing anything.
    objs = [o for f in args.files for o in parse_manifests(*read_source(f))]
    for line in apply_objects(store, objs):
        print(line)
    return 0


def cmd_delete(args) -> int:
    from bgpnet.felix.objects import delete_objects, parse_manifests, read_source

    store = _store(args)
    objs = [o for f in args.files for o in parse_manifests(*read_source(f))]
    lines = delete_objects(store, objs, args.ignore_not_found)
    for line in lines:
        print(line)
    return 1 if any(line.endswith("not found") for line in lines) else 0


def _cluster(store):
    from bgpnet.felix.rules import Cluster

    return Cluster(store.list(POD), store.list(NAMESPACE), store.list(NETWORK_POLICY))


def cmd_explain(args) -> int:
    from bgpnet.felix.rules import explain_cluster

    print(explain_cluster(_cluster(_store(args)), args.src, args.dst, args.port, args.protocol))
    return 0


def cmd_show(args) -> int:
    from bgpnet.felix.iptables import DataplaneError, IptablesDriver
    from bgpnet.felix.rules import render_cluster

    cluster = _cluster(_store(args))
    rs = render_cluster(cluster, args.node)
    kernel = None
    if not args.desired:
        try:
            kernel = IptablesDriver().read()
        except (DataplaneError, OSError) as e:
            print(f"(kernel not read: {e}; showing the desired state only)")

    def status(chain) -> str:
        if kernel is None:
            return ""
        have = kernel.chains.get(chain.name)
        return " [missing]" if have is None else " [in sync]" if have == chain.hashes else " [drifted]"

    def dump(chain, indent: str) -> None:
        if args.rules:
            for line in chain.lines():
                print(indent + line)

    print(f"node {args.node}: {len(rs.endpoints)} local pods, {len(rs.chains)} chains, {rs.rule_count()} rules, "
          f"{len(rs.ipsets)} ipsets")
    if not rs.endpoints:
        print("  (no pod of this node has an interface in the datastore)")
    for ep in rs.endpoints:
        print(f"pod {ep.pod} ip {ep.ip} interface {ep.interface}")
        for direction, cname, pols in (("ingress", ep.ingress_chain, ep.ingress_policies),
                                       ("egress", ep.egress_chain, ep.egress_policies)):
            chain = rs.chain(cname)
            what = f"policies {', '.join(pols)}" if pols else "open (no policy selects this pod)"
            print(f"  {direction:7} {cname}{status(chain)}: {what}")
            dump(chain, "      ")
    policy_chains = [c for c in rs.chains if c.name.startswith(("BGPNET-PI-", "BGPNET-PO-"))]
    if policy_chains:
        print("policy chains:")
        for c in policy_chains:
            origin = c.rules[0].comment.split(":", 1)[0] if c.rules else "(no IPv4 rules: allows nothing)"
            print(f"  {c.name}{status(c)}: {origin}, {len(c.rules)} rules")
            dump(c, "      ")
    others = [c for c in rs.chains if not c.name.startswith(("BGPNET-PI-", "BGPNET-PO-", "BGPNET-TW-", "BGPNET-FW-"))]
    print("dispatch chains: " + ", ".join(f"{c.name}{status(c)}" for c in others))
    if kernel is not None:
        stale = sorted(set(kernel.chains) - {c.name for c in rs.chains})
        if stale:
            print("chains in the kernel that are no longer wanted: " + ", ".join(stale))
    for s in rs.ipsets:
        print(f"ipset {s.name} {s.type} {len(s.members)} members: {s.description}")
    for err in rs.errors:
        print(f"rejected: {err}")
    return 0


def cmd_sync(args) -> int:
    from bgpnet.felix.sync import PolicyAgent

    print(PolicyAgent(_store(args), args.node).sync(full=True))
    return 0


def cmd_cleanup(args) -> int:
    from bgpnet.felix.iptables import IptablesDriver

    print(f"removed: {IptablesDriver().cleanup()}")
    return 0

