"""The node's commands: `bgpnet agent`, `config check`, `render exabgp`, `status` and `reload`."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import signal
import time
from pathlib import Path

from bgpnet.agent import Agent
from bgpnet.config import AgentConfig, load_config, resolve
from bgpnet.datastore import base as kinds
from bgpnet.datastore.base import Object, open_datastore
from bgpnet.errors import BgpnetError
from bgpnet.peering import desired_neighbors, read_passwords

GC_THRESHOLD = 50_000  # allocations between young-generation collections (Python's default: 700)


def _load(args) -> AgentConfig:
    cfg = load_config(args.config)
    if getattr(args, "run_dir", None):
        cfg = dataclasses.replace(cfg, run_dir=args.run_dir)
    return cfg


def cmd_agent(args) -> int:
    cfg = resolve(_load(args))
    passwords_ok = read_passwords(cfg)  # fail before anything starts
    del passwords_ok
    from bgpnet.felix import PolicyAgent

    store = open_datastore(cfg.datastore)
    # A burst of 10k learned routes allocates ~100k objects (prefixes, paths, routes) that live on, and
    # the default thresholds (700, 10, 10) then run the cyclic GC over the whole growing table again and
    # again: a third of the agent's CPU in such a burst. Our tables hold no reference cycles; collect
    # rarely. `gc.freeze()` leaves what start-up made (modules, config) out of every collection.
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    asyncio.run(Agent(cfg, store, policy=PolicyAgent(store, cfg.node.name)).run())
    return 0


def cmd_config_check(args) -> int:
    for path in args.files:
        cfg = load_config(path)
        print(f"{path}: ok (node {cfg.node.name or '<hostname>'}, AS {cfg.node.asn}, "
              f"{len(cfg.peers)} explicit peers, mesh {'on' if cfg.bgp.node_to_node_mesh else 'off'})")
    return 0


def _peek_store(cfg: AgentConfig) -> list[Object]:
    """Nodes from the local store if it exists; never creates one."""
    if cfg.datastore.type == "local" and not Path(cfg.datastore.path).exists():
        return []
    return open_datastore(cfg.datastore).list(kinds.NODE)


def cmd_render_exabgp(args) -> int:
    from bgpnet.speaker.speaker import Speaker

    cfg = resolve(_load(args))
    neighbors = desired_neighbors(cfg, _peek_store(cfg), read_passwords(cfg))
    print(Speaker(Path(cfg.run_dir), lambda event: None, cfg.node.address.ip).render(neighbors), end="")
    return 0


def read_status(run_dir: str) -> dict:
    path = Path(run_dir) / "status.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BgpnetError(f"no agent status at {path}: is `bgpnet agent` running with --run-dir {run_dir}?") from None


def format_status(st: dict) -> str:
    lines = [f"node {st['node']} {st['address']} AS {st['asn']}: {st['state']}"
             f"{'' if st['in_sync'] else ' (waiting for end-of-RIB)'}",
             f"announcing: {', '.join(st['announced']) or 'nothing'}"]
    if st.get("route_reflector_cluster_id"):
        lines.append(f"route reflector, cluster id {st['route_reflector_cluster_id']}: reflecting "
                     f"{st.get('reflected', 0)} paths")
    lines += ["",
              f"{'PEER':<16} {'NAME':<12} {'AS':>10} {'TYPE':<5} {'STATE':<12} {'SINCE':>9} {'RCV/ACC/REJ':>13}  INFO"]
    now = time.time()
    for p in st["peers"]:
        age = int(now - p["since"])
        since = f"{age // 3600}h{age % 3600 // 60:02d}m" if age >= 3600 else f"{age // 60}m{age % 60:02d}s"
        counts = f"{p['prefixes_received']}/{p['prefixes_accepted']}/{p['prefixes_rejected']}"
        lines.append(f"{p['address']:<16} {p['name'][:12]:<12} {p['asn']:>10} {p['type']:<5} {p['state']:<12} "
                     f"{since:>9} {counts:>13}  {p['last_error']}")
        for prefix, reason in p.get("rejected", {}).items():
            lines.append(f"{'':<16} rejected {prefix}: {reason}")
    lines += ["", f"installed routes ({len(st['routes'])}):"] + [f"  {r}" for r in st["routes"]]
    if st["errors"]:
        lines += ["errors:"] + [f"  {e}" for e in st["errors"]]
    return "\n".join(lines)


def cmd_status(args) -> int:
    st = read_status(args.run_dir)
    print(json.dumps(st, indent=2) if args.json else format_status(st))
    return 0


def cmd_reload(args) -> int:
    pidfile = Path(args.run_dir) / "agent.pid"
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as e:
        raise BgpnetError(f"cannot signal the agent via {pidfile}: {e}") from None
    print(f"sent SIGHUP to agent {pid}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("agent", help="run the node agent")
    p.add_argument("--config", "-c", required=True, help="agent config file (YAML)")
    p.add_argument("--run-dir", help="override run_dir from the config")
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("config", help="config file tools")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate config files")
    c.add_argument("files", nargs="+")
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("render", help="print generated configs without starting anything")
    rsub = p.add_subparsers(dest="render_command", required=True)
    r = rsub.add_parser("exabgp", help="the ExaBGP config the agent would run")
    r.add_argument("--config", "-c", required=True)
    r.add_argument("--run-dir")
    r.set_defaults(func=cmd_render_exabgp)

    for name, func, helptext in (("status", cmd_status, "show BGP peers and installed routes"),
                                 ("reload", cmd_reload, "make a running agent re-read its config (SIGHUP)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--run-dir", default="/run/bgpnet", help="the agent's run_dir")
        if name == "status":
            p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
