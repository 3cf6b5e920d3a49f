"""Run one Speaker from a JSON spec and print its events as JSON lines: for tests and the lab.

    python -m bgpnet.speaker.demo_peer SPEC_JSON      (stdin: JSON commands, one per line)

SPEC: {"run_dir", "listen", "port", "neighbors": [Neighbor fields], "announce": {prefix: attrs}}.
Commands: {"announce": {...}} | {"neighbors": [...]} | {"status": true} | {"stop": true, "graceful": bool}.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from bgpnet.model import Path as BgpPath
from bgpnet.speaker.messages import Event
from bgpnet.speaker.render import Neighbor
from bgpnet.speaker.speaker import Speaker

log = logging.getLogger(__name__)

_ADDRESSES = ("address", "local_address", "router_id", "cluster_id")


def neighbor_from_dict(d: dict) -> Neighbor:
    d = dict(d)
    for key in _ADDRESSES:
        if d.get(key) is not None:
            d[key] = IPv4Address(d[key])
    return Neighbor(**d)


def event_to_dict(event: Event) -> dict:
    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, BgpPath):
            return {"prefix": str(v.prefix), **plain(v.attributes)}
        if dataclasses.is_dataclass(v):
            return {k: plain(x) for k, x in dataclasses.asdict(v).items()}
        if isinstance(v, (IPv4Address, IPv4Network)):
            return str(v)
        return v

    return {"event": type(event).__name__, **{f.name: plain(getattr(event, f.name)) for f in dataclasses.fields(event)}}


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def status(speaker: Speaker) -> dict:
    return {
        "event": "status",
        "pid": speaker.pid,
        "established": sorted(map(str, speaker.established)),
        "restarts": speaker.restarts,
        "errors": speaker.errors,
    }


async def run(spec: dict) -> int:
    speaker = Speaker(
        Path(spec["run_dir"]),
        lambda e: emit(event_to_dict(e)),
        IPv4Address(spec["listen"]) if spec.get("listen") else None,
        port=spec.get("port", 179),
    )
    await speaker.start([neighbor_from_dict(n) for n in spec.get("neighbors", [])])
    speaker.set_announcements({IPv4Network(p): a for p, a in spec.get("announce", {}).items()})
    emit(status(speaker) | {"event": "started"})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    graceful = True
    while line := await reader.readline():
        cmd = json.loads(line)
        if "announce" in cmd:
            speaker.set_announcements({IPv4Network(p): a for p, a in cmd["announce"].items()})
        if "neighbors" in cmd:
            changed = await speaker.set_neighbors([neighbor_from_dict(n) for n in cmd["neighbors"]])
            emit({"event": "reloaded", "changed": changed})
        if "status" in cmd:
            emit(status(speaker))
        if "stop" in cmd:
            graceful = cmd.get("graceful", True)
            break
    await speaker.stop(graceful=graceful)
    emit({"event": "stopped"})
    return 0


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    return asyncio.run(run(json.loads(argv[0])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
