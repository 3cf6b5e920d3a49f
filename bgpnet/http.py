"""Health (/healthz) and Prometheus metrics (/metrics) on localhost, read from the agent's status."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)


class AgentCollector:
    """Builds metric families from `agent.status()` at scrape time: no second copy of the state."""

    def __init__(self, agent):
        self.agent = agent

    def collect(self):
        st = self.agent.status()
        up = GaugeMetricFamily("bgpnet_peer_up", "1 if the BGP session is established", labels=["peer", "name"])
        counts = {k: GaugeMetricFamily(f"bgpnet_peer_prefixes_{k}", f"prefixes {k} from the peer",
                                       labels=["peer", "name"]) for k in ("received", "accepted", "rejected")}
        for p in st["peers"]:
            labels = [p["address"], p["name"]]
            up.add_metric(labels, 1.0 if p["state"] == "established" else 0.0)
            for k, fam in counts.items():
                fam.add_metric(labels, float(p[f"prefixes_{k}"]))
        yield up
        yield from counts.values()
        yield GaugeMetricFamily("bgpnet_routes_installed", "kernel routes bgpnet wants and has applied",
                                value=len(st["routes"]))
        yield GaugeMetricFamily("bgpnet_announced_prefixes", "prefixes this node announces",
                                value=len(st["announced"]))
        yield GaugeMetricFamily("bgpnet_in_sync", "1 once routes are being programmed", value=float(st["in_sync"]))
        writes = CounterMetricFamily("bgpnet_route_writes", "kernel route changes applied", labels=["op"])
        for op, n in self.agent.route_writes.items():
            writes.add_metric([op], float(n))
        yield writes
        yield CounterMetricFamily("bgpnet_route_write_errors", "failed kernel route writes",
                                  value=float(self.agent.route_write_errors))
        yield CounterMetricFamily("bgpnet_speaker_restarts", "ExaBGP restarts after it died",
                                  value=float(st["speaker_restarts"]))


def serve(agent, host: str, port: int) -> ThreadingHTTPServer:
    """Start the server in a daemon thread; returns it (call .shutdown() to stop)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path == "/metrics":
                body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
            elif self.path in ("/healthz", "/readyz"):
                st = agent.status()
                ready = st["in_sync"] or self.path == "/healthz"
                body = json.dumps({"ok": ready, "in_sync": st["in_sync"],
                                   "peers_up": sum(p["state"] == "established" for p in st["peers"]),
                                   "peers": len(st["peers"])}).encode()
                ctype, code = "application/json", 200 if ready else 503
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            log.debug("http: " + fmt, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="bgpnet-http", daemon=True).start()
    log.info("health and metrics on http://%s:%d/", host, port)
    return server
