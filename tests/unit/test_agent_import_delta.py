"""The agent's per-update import (only the update's prefixes are checked) ends in the same state as the
full import policy re-run over the peer's whole table, for any sequence of updates."""

import asyncio
from ipaddress import IPv4Address, IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from bgpnet.agent import Agent
from bgpnet.config import AgentConfig, build
from bgpnet.filters import build_rules
from bgpnet.model import Path
from bgpnet.speaker.messages import Update
from bgpnet.speaker.rib import Rib

PEERS = [IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")]
# a mix of allowed (10.64/10), own (10.244.2.0/24 and inside), and outside prefixes
PREFIXES = [IPv4Network(p) for p in (
    "10.64.0.0/26", "10.64.0.64/26", "10.64.1.0/24", "10.70.0.0/16", "10.244.2.0/24", "10.244.2.128/25",
    "192.168.0.0/24", "0.0.0.0/0")]


def make_agent(max_prefixes: int = 0) -> Agent:
    cfg = build(AgentConfig, {
        "node": {"name": "n2", "address": "10.0.0.12/24", "asn": 64512, "router_id": "10.0.0.12"},
        "pod_cidrs": ["10.244.2.0/24"],
        "bgp": {"import_allow": ["10.64.0.0/10"]},
        "peers": [{"address": str(p), "asn": 65000, "max_prefixes": max_prefixes} for p in PEERS]})
    agent = Agent(cfg, store=None)
    agent.rib = Rib()
    agent.rules = build_rules([], [], [IPv4Network("10.244.2.0/24")], [IPv4Network("10.64.0.0/10")])
    agent.peer_configs = {p.address: p for p in cfg.peers}
    return agent


paths = st.builds(
    lambda peer, pfx, hop, aspath: Path(pfx, IPv4Address(f"10.0.0.{hop}"), peer, 65000, aspath, ibgp=False),
    st.sampled_from(PEERS), st.sampled_from(PREFIXES), st.integers(1, 3),
    st.sampled_from([(65000,), (65000, 64512), (65000, 65001)]))
updates = st.builds(
    lambda peer, ann, wd: Update(peer, tuple(Path(p.prefix, p.next_hop, peer, p.peer_asn, p.as_path, ibgp=False)
                                             for p in ann), tuple(wd)),
    st.sampled_from(PEERS), st.lists(paths, max_size=5), st.lists(st.sampled_from(PREFIXES), max_size=3))


@settings(max_examples=200, deadline=None)
@given(st.lists(updates, min_size=1, max_size=12))
def test_per_update_import_matches_the_full_rerun(seq):
    async def run():
        delta, full = make_agent(), make_agent()
        full._import_update = lambda event: None  # force the full re-run on every update
        for u in seq:
            delta.handle_event(u)
            full.handle_event(u)
            for peer in PEERS:
                assert delta.accepted.get(peer, {}) == full.accepted.get(peer, {})
                assert delta.rejected.get(peer, {}) == full.rejected.get(peer, {})
            assert delta.rib.best() == full.rib.best()
    asyncio.run(run())


def test_a_prefix_limit_uses_the_full_rerun():
    async def run():
        agent = make_agent(max_prefixes=1)
        a, b = PREFIXES[0], PREFIXES[1]
        mk = lambda pfx: Path(pfx, IPv4Address("10.0.0.1"), PEERS[0], 65000, (65000,), ibgp=False)  # noqa: E731
        agent.handle_event(Update(PEERS[0], (mk(a), mk(b))))
        assert set(agent.accepted[PEERS[0]]) == {a} and set(agent.rejected[PEERS[0]]) == {b}
        agent.handle_event(Update(PEERS[0], (), (a,)))
        assert set(agent.accepted[PEERS[0]]) == {b}  # the freed slot goes to the one rejected before
    asyncio.run(run())
