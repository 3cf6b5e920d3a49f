"""Two Speakers (real ExaBGP) in two namespaces joined by a veth: announce, learn, stop, kill, restart."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from bgpnet.lab.netns import veth, wait_for
from tests.integration.speaker_helpers import DemoPeer, announced, event, withdrawn

A_IP, B_IP = "10.231.0.1", "10.231.0.2"
A_NET, B_NET, X_NET = "10.232.1.0/26", "10.232.2.0/26", "10.232.9.0/26"


def spec(run_dir, me, peer, my_asn, peer_asn, passive, announce, gr=120):
    return {
        "run_dir": str(run_dir),
        "listen": me,
        "neighbors": [{
            "address": peer, "peer_asn": peer_asn, "local_address": me, "local_asn": my_asn,
            "router_id": me, "name": "test", "passive": passive, "hold_time": 9, "graceful_restart": gr,
        }],
        "announce": announce,
    }


@pytest.fixture
def pair(netns_factory, tmp_path):
    """Start A (active, AS 65001) and B (passive, AS 65002); `pair(gr)` returns (a, b); `pair.restart_b()`
    starts a fresh B in the same namespace."""
    made = []
    nss = {}

    def start_b(gr=120):
        b = DemoPeer(nss["b"], spec(tmp_path / "b", B_IP, A_IP, 65002, 65001, True, {B_NET: {}}, gr),
                     tmp_path / f"b{len(made)}.err")
        made.append(b)
        return b

    def start_a(gr=120):
        a = DemoPeer(nss["a"], spec(tmp_path / "a", A_IP, B_IP, 65001, 65002, False,
                                    {A_NET: {"communities": ["65001:7"]}}, gr), tmp_path / f"a{len(made)}.err")
        made.append(a)
        return a

    def start(gr=120):
        nss["a"], nss["b"] = netns_factory("a"), netns_factory("b")
        veth(nss["a"], "eth1", nss["b"], "eth1")
        nss["a"].run("ip", "addr", "add", f"{A_IP}/24", "dev", "eth1")
        nss["b"].run("ip", "addr", "add", f"{B_IP}/24", "dev", "eth1")
        return start_a(gr), start_b(gr)

    start.restart_a = start_a
    start.restart_b = start_b
    yield start
    for p in made:
        p.close()


def test_exchange_stop_and_kill(pair):
    a, b = pair()
    up_a = a.wait(event("PeerUp", peer=B_IP), 40, what="PeerUp on A")
    assert up_a["peer_asn"] == 65002
    b.wait(event("PeerUp", peer=A_IP), 40, what="PeerUp on B")

    got_b = a.wait(announced(B_NET, B_IP), 20, what=f"{B_NET} via {B_IP} on A")
    path = next(p for p in got_b["announced"] if p["prefix"] == B_NET)
    assert path["as_path"] == [65002] and path["ibgp"] is False and path["peer"] == B_IP
    got_a = b.wait(announced(A_NET, A_IP), 20, what=f"{A_NET} via {A_IP} on B")
    path = next(p for p in got_a["announced"] if p["prefix"] == A_NET)
    assert path["communities"] == ["65001:7"] and path["as_path"] == [65001]
    a.wait(event("EndOfRib", peer=B_IP), 20, what="EOR from B")

    # a change of the desired set reaches the established peer: new prefix, then its withdrawal
    mark = b.mark()
    a.send({"announce": {A_NET: {"communities": ["65001:7"]}, "10.232.9.0/26": {"med": 5}}})
    extra = b.wait(announced("10.232.9.0/26", A_IP), 20, mark, "extra prefix on B")
    assert next(p for p in extra["announced"] if p["prefix"] == "10.232.9.0/26")["med"] == 5
    a.send({"announce": {A_NET: {"communities": ["65001:7"]}}})
    b.wait(withdrawn("10.232.9.0/26"), 20, mark, "withdrawal of the extra prefix on B")

    # kill -9 A's ExaBGP: A's Speaker reports it, restarts ExaBGP, session and routes come back
    old_pid = a.status()["pid"]
    mark_a, mark_b = a.mark(), b.mark()
    os.kill(old_pid, signal.SIGKILL)
    a.wait(event("SpeakerShutdown"), 10, mark_a, "SpeakerShutdown on A")
    down = b.wait(event("PeerDown", peer=A_IP), 30, mark_b, "PeerDown on B after kill -9")
    assert down["notification"] is False
    a.wait(event("PeerUp", peer=B_IP), 60, mark_a, "PeerUp on A after restart")
    b.wait(announced(A_NET, A_IP), 30, mark_b, f"{A_NET} again on B")
    a.wait(announced(B_NET, B_IP), 30, mark_a, f"{B_NET} again on A")
    st = a.status()
    assert st["restarts"] == 1 and st["pid"] not in (None, old_pid)


def test_deliberate_stop_sends_cease_and_withdraws(pair):
    a, b = pair(gr=0)  # without graceful restart a teardown carries a Cease NOTIFICATION
    b.wait(announced(A_NET, A_IP), 40, what=f"{A_NET} on B")
    mark = b.mark()
    a.send({"stop": True, "graceful": False})
    a.wait(event("stopped"), 30, what="A stopped")
    b.wait(withdrawn(A_NET), 20, mark, f"withdrawal of {A_NET} on B")
    down = b.wait(event("PeerDown", peer=A_IP), 20, mark, "PeerDown on B")
    assert down["notification"] is True and "notification received (6,2)" in down["reason"]
    note = b.wait(event("Notification", peer=A_IP), 5, mark, "Notification on B")
    assert (note["code"], note["subcode"]) == (6, 2)


def test_graceful_stop_is_silent(pair):
    """With graceful restart (the default) ExaBGP closes on SIGTERM without NOTIFICATION or withdrawal."""
    a, b = pair()
    b.wait(announced(A_NET, A_IP), 40, what=f"{A_NET} on B")
    mark = b.mark()
    a.send({"stop": True})
    a.wait(event("stopped"), 30, what="A stopped")
    down = b.wait(event("PeerDown", peer=A_IP), 20, mark, "PeerDown on B")
    assert down["notification"] is False
    assert b.find(withdrawn(A_NET), mark) is None


def test_reload_keeps_unchanged_sessions_and_withdrawals_survive_a_flap(pair):
    a, b = pair()
    b.wait(announced(A_NET, A_IP), 40, what=f"{A_NET} on B")
    neighbor_b = spec("", A_IP, B_IP, 65001, 65002, False, {})["neighbors"][0]
    other = dict(neighbor_b, address="10.231.0.3", peer_asn=65003, passive=True)

    # adding a neighbour reloads ExaBGP in place: B's session stays up
    mark_b = b.mark()
    mark_a = a.mark()
    a.send({"neighbors": [neighbor_b, other]})
    assert a.wait(event("reloaded"), 20, mark_a, "reload")["changed"] is True
    a.send({"announce": {A_NET: {"communities": ["65001:7"]}, X_NET: {}}})
    b.wait(announced(X_NET, A_IP), 20, mark_b, f"{X_NET} on B after the reload")
    assert b.find(event("PeerDown"), mark_b) is None
    mark_a = a.mark()
    a.send({"neighbors": [neighbor_b, other]})
    assert a.wait(event("reloaded"), 20, mark_a, "no-op reload")["changed"] is False

    # changing B's neighbour block re-establishes that session; our routes and EOR come back
    mark_b = b.mark()
    a.send({"neighbors": [dict(neighbor_b, hold_time=12), other]})
    down = b.wait(event("PeerDown", peer=A_IP), 20, mark_b, "PeerDown on B after a changed neighbour")
    assert down["notification"] is False  # graceful restart: ExaBGP closes silently
    b.wait(event("EndOfRib", peer=A_IP), 30, mark_b, "EOR from A after the re-establishment")
    assert b.find(announced(A_NET, A_IP), mark_b) and b.find(announced(X_NET, A_IP), mark_b)

    # withdraw X while B is away: when B comes back it must get A_NET but never X again
    mark_a = a.mark()
    b.send({"stop": True})
    b.wait(event("stopped"), 30, what="B stopped")
    a.wait(event("PeerDown", peer=B_IP), 20, mark_a, "PeerDown on A")
    a.send({"announce": {A_NET: {"communities": ["65001:7"]}}})
    b2 = pair.restart_b()
    b2.wait(event("EndOfRib", peer=A_IP), 60, what="EOR from A on the new B")
    assert b2.find(announced(A_NET, A_IP)) is not None
    assert b2.find(announced(X_NET)) is None, "a prefix withdrawn while the session was down came back"


def _children(pid: int) -> list[int]:
    return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_relay_respawn_and_agent_killed(pair):
    a, b = pair()
    b.wait(announced(A_NET, A_IP), 40, what=f"{A_NET} on B")
    exabgp_pid = a.status()["pid"]

    # the relay dies: ExaBGP respawns it, the Speaker resyncs, no session is lost
    [relay] = _children(exabgp_pid)
    mark_b = b.mark()
    os.kill(relay, signal.SIGKILL)
    wait_for(lambda: _children(exabgp_pid) and _children(exabgp_pid) != [relay], 30, what="relay respawned")
    a.send({"announce": {A_NET: {"communities": ["65001:7"]}, X_NET: {}}})
    b.wait(announced(X_NET, A_IP), 30, mark_b, f"{X_NET} through the respawned relay")
    assert b.find(event("PeerDown"), mark_b) is None
    assert a.status()["pid"] == exabgp_pid and a.status()["restarts"] == 0

    # the agent itself is killed -9: its ExaBGP lives on (sessions and routes stay); a new agent on the
    # same run dir stops that leftover ExaBGP and takes over
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait(10)
    assert Path(f"/proc/{exabgp_pid}").exists()
    mark_b = b.mark()
    a2 = pair.restart_a()
    a2.wait(event("PeerUp", peer=B_IP), 60, what="PeerUp on the new A")
    wait_for(lambda: not Path(f"/proc/{exabgp_pid}").exists(), 20, what="leftover ExaBGP gone")
    b.wait(event("EndOfRib", peer=A_IP), 30, mark_b, "EOR from the new A")
    assert b.find(announced(A_NET, A_IP), mark_b)
    assert a2.status()["pid"] != exabgp_pid
