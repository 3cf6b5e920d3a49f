"""`bgpnet lab ...` subcommands: up, down, status, exec, list."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from bgpnet.errors import BgpnetError


def register(sub) -> None:
    p = sub.add_parser("lab", help="run containerlab topology files as network namespaces on this machine")
    lab = p.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", required=True)

    up = lab.add_parser("up", help="bring a topology (*.clab.yml) up")
    up.add_argument("topology", help="containerlab topology file")
    up.add_argument("--name-prefix", metavar="P", default=None,
                    help="name the lab P instead of the topology's name (namespaces become P-<node>)")
    up.add_argument("--keep-on-failure", action="store_true",
                    help="if a step fails, leave what came up for inspection (remove it with `lab down`)")
    up.set_defaults(func=cmd_up)

    down = lab.add_parser("down", help="stop a lab's daemons and delete its namespaces")
    down.add_argument("name")
    down.set_defaults(func=cmd_down)

    st = lab.add_parser("status", help="nodes, namespaces, processes and BGP sessions of a lab")
    st.add_argument("name")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    ex = lab.add_parser("exec", help="run a command in a node's namespace; exits with its status")
    ex.add_argument("name")
    ex.add_argument("node")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    ex.set_defaults(func=cmd_exec)

    ls = lab.add_parser("list", help="labs that are up")
    ls.set_defaults(func=cmd_list)

    from bgpnet.lab.pods import register_pod_commands

    register_pod_commands(lab)
    for verb in ("apply", "delete"):
        ap = lab.add_parser(verb, help=f"{verb} Kubernetes objects (Namespace, NetworkPolicy, ...) in a lab's datastore")
        ap.add_argument("name")
        ap.add_argument("-f", "--filename", required=True, help="YAML file (several documents allowed)")
        ap.set_defaults(func=cmd_apply, delete=verb == "delete")


def cmd_apply(args) -> int:
    from bgpnet.felix.objects import lab_apply
    from bgpnet.lab.pods import open_lab, store_path

    for line in lab_apply(store_path(args.name, None, open_lab(args.name)), args.filename, delete=args.delete):
        print(line)
    return 0


def _require_root() -> None:
    if os.geteuid() != 0:
        raise BgpnetError("bgpnet lab needs root (it creates network namespaces)")


def cmd_up(args) -> int:
    from bgpnet.lab.runner import Lab

    _require_root()
    lab = Lab.up(args.topology, prefix=args.name_prefix, keep_on_failure=args.keep_on_failure)
    print(f"lab {lab.name} is up: {len(lab.nodes)} nodes")
    for name, node in lab.nodes.items():
        procs = ", ".join(f"{p.name}[{p.pid}]" for p in node.procs) or "-"
        print(f"  {name:<12} {node.role:<7} netns {node.netns.name:<20} {procs}")
    print(f"state: {lab.state_path}\ninspect: bgpnet lab status {lab.name}; "
          f"bgpnet lab exec {lab.name} NODE -- CMD; remove: bgpnet lab down {lab.name}")
    return 0


def cmd_down(args) -> int:
    from bgpnet.lab.runner import Lab

    _require_root()
    lab = Lab.open(args.name)
    lab.down()
    print(f"lab {args.name} is down")
    return 0


def cmd_status(args) -> int:
    from bgpnet.lab.runner import Lab

    _require_root()
    data = Lab.open(args.name).status_data()
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        print()
        return 0
    print(f"lab {data['name']} ({data['status']}) from {data['topology']}")
    for name, n in data["nodes"].items():
        ns = n["netns"] + ("" if n["netns_exists"] else " (MISSING)")
        procs = ", ".join(f"{p['name']}[{p['pid']}] {'alive' if p['alive'] else 'DEAD'}" for p in n["processes"])
        print(f"  {name:<12} {n['role']:<7} netns {ns:<20} {procs or '-'}")
        for peer, s in n.get("bgp", {}).items():
            if n["role"] == "frr":
                print(f"      bgp {peer:<16} AS {s['remote_as']:<10} {s['state']:<12} "
                      f"prefixes received {s['prefixes_received']}")
            else:
                print(f"      bgp {peer:<16} {s['state']:<6} {s['info']}")
        if "routes_proto_201" in n:
            print(f"      {len(n['routes_proto_201'])} bgpnet routes (proto 201)")
            for r in n["routes_proto_201"]:
                print(f"        {r}")
        if "error" in n:
            print(f"      error: {n['error']}")
    return 0


def cmd_exec(args) -> int:
    from bgpnet.lab.runner import Lab

    _require_root()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise BgpnetError("give a command after `--`, e.g. `bgpnet lab exec LAB NODE -- ip route`")
    node = Lab.open(args.name).node(args.node)
    return subprocess.run(node.netns.argv(*cmd), env={**os.environ, **node.env}).returncode


def cmd_list(args) -> int:
    from bgpnet.lab.runner import Lab

    labs = Lab.list()
    if not labs:
        print("no labs are up")
        return 0
    for lab in labs:
        procs = [p for n in lab.nodes.values() for p in n.procs]
        alive = sum(p.alive() for p in procs)
        print(f"{lab.name:<16} {lab.status:<8} {len(lab.nodes)} nodes, {alive}/{len(procs)} daemons alive  "
              f"{lab.topology}")
    return 0
