"""Best-path selection and the adj-RIB-in, including order independence (hypothesis)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from bgpnet.model import Path
from bgpnet.speaker.messages import EndOfRib, PeerDown, PeerUp, SpeakerShutdown, Update
from bgpnet.speaker.rib import Rib, select_best

A, N = IPv4Address, IPv4Network
P1 = N("10.1.0.0/26")


def path(peer="10.0.0.2", nh=None, **kw) -> Path:
    return Path(prefix=kw.pop("prefix", P1), next_hop=A(nh or peer), peer=A(peer), **kw)


def test_decision_order():
    base = path("10.0.0.2", as_path=(65002,), ibgp=False)
    assert select_best([base, path("10.0.0.3", local_pref=200, as_path=(1, 2, 3))])[0].peer == A("10.0.0.3")
    assert select_best([path("10.0.0.3", as_path=(1, 2)), base]) == (base,)
    assert select_best([path("10.0.0.3", as_path=(1,), origin="incomplete", ibgp=False), base]) == (base,)
    assert select_best([path("10.0.0.3", as_path=(7,), med=10, ibgp=False), base]) == (base,)
    # MED is compared across neighbour ASes too (always-compare-med)
    assert select_best([path("10.0.0.3", as_path=(65003,), med=1, ibgp=False), path("10.0.0.4", as_path=(65004,))])[0].peer == A("10.0.0.4")
    assert select_best([path("10.0.0.3", as_path=(65002,), ibgp=True), base]) == (base,)
    assert select_best([]) == ()


def test_ecmp_set_sorted_by_next_hop():
    paths = [path(p, as_path=(65000,), ibgp=False) for p in ("10.0.0.9", "10.0.0.3", "10.0.0.5")]
    assert [str(p.next_hop) for p in select_best(paths)] == ["10.0.0.3", "10.0.0.5", "10.0.0.9"]
    worse = path("10.0.0.1", as_path=(65000, 1), ibgp=False)
    assert worse not in select_best([*paths, worse])


def test_rib_updates_and_changes():
    rib = Rib()
    a, b = A("10.0.0.2"), A("10.0.0.3")
    pa, pb = path("10.0.0.2"), path("10.0.0.3", local_pref=50)
    assert rib.apply(PeerUp(a, 64512)) == set()
    assert rib.apply(Update(a, (pa,), ())) == {P1}
    assert rib.apply(Update(b, (pb,), ())) == set()  # worse path: best unchanged
    assert rib.best() == {P1: (pa,)}
    assert rib.counts() == {a: 1, b: 1} and rib.peers() == {a, b}
    assert rib.apply(Update(a, (), (P1,))) == {P1}
    assert rib.best() == {P1: (pb,)}
    assert rib.apply(Update(b, (), (P1,))) == {P1} and rib.best() == {}
    assert rib.apply(Update(b, (), (P1,))) == set()  # withdrawing the unknown changes nothing


def test_new_communities_alone_are_a_change():
    """The best path carries what a reflector passes on: a re-announcement that changes only communities
    must replace it (routes in the kernel stay equal, so nothing is rewritten there)."""
    rib = Rib()
    a = A("10.0.0.2")
    rib.apply(Update(a, (path(communities=("65000:1",)),), ()))
    assert rib.apply(Update(a, (path(communities=("65000:2",)),), ())) == {P1}
    assert rib.best()[P1][0].communities == ("65000:2",)
    assert rib.apply(Update(a, (path(communities=("65000:2",)),), ())) == set()  # the same again: no change


def test_graceful_restart_stale_and_sweep():
    rib = Rib()
    a = A("10.0.0.2")
    p2 = path(prefix=N("10.2.0.0/26"))
    rib.apply(Update(a, (path(), p2), ()))
    assert rib.apply(PeerDown(a, "closing connection", False)) == set()
    assert rib.stale_counts() == {a: 2} and set(rib.best()) == {P1, p2.prefix}  # still forwarding
    rib.apply(PeerUp(a, 64512))
    rib.apply(Update(a, (path(),), ()))  # re-announced: no longer stale
    assert rib.stale_counts() == {a: 1}
    assert rib.apply(EndOfRib(a)) == {p2.prefix}
    assert set(rib.best()) == {P1} and rib.stale_counts() == {}


def test_notification_drops_at_once_and_speaker_shutdown_marks_all():
    rib = Rib()
    a, b = A("10.0.0.2"), A("10.0.0.3")
    rib.apply(Update(a, (path("10.0.0.2"),), ()))
    rib.apply(Update(b, (path("10.0.0.3", prefix=N("10.3.0.0/26")),), ()))
    assert rib.apply(SpeakerShutdown()) == set() and rib.stale_counts() == {a: 1, b: 1}
    assert rib.apply(PeerDown(a, "notification received (6,2)", True)) == {P1}
    assert rib.peers() == {b}
    no_gr = Rib(graceful_restart=False)
    no_gr.apply(Update(a, (path("10.0.0.2"),), ()))
    assert no_gr.apply(PeerDown(a, "closing connection", False)) == {P1} and no_gr.best() == {}


# -- order independence: the best paths depend only on the final adj-RIB-in, not the update order
PEERS = [A(f"10.0.0.{i}") for i in range(2, 6)]
PREFIXES = [N(f"10.9.{i}.0/26") for i in range(4)]
attrs = st.fixed_dictionaries({
    "local_pref": st.sampled_from([50, 100, 200]),
    "as_path": st.lists(st.sampled_from([65001, 65002, 65003]), max_size=3).map(tuple),
    "origin": st.sampled_from(["igp", "egp", "incomplete"]),
    "med": st.sampled_from([0, 10]),
    "nh": st.sampled_from(["10.0.1.1", "10.0.1.2", None]),
})
op = st.tuples(st.sampled_from(PEERS), st.sampled_from(PREFIXES), st.one_of(st.none(), attrs))


def _update(peer, prefix, a) -> Update:
    if a is None:
        return Update(peer, (), (prefix,))
    a = dict(a)
    p = Path(prefix=prefix, next_hop=A(a.pop("nh") or str(peer)), peer=peer, ibgp=False, **a)
    return Update(peer, (p,), ())


@settings(max_examples=200, deadline=None)
@given(st.lists(op, max_size=30), st.randoms(use_true_random=False))
def test_best_depends_only_on_final_paths(ops, random):
    rib = Rib()
    for peer, prefix, a in ops:
        rib.apply(_update(peer, prefix, a))
    # the final state, replayed once per (peer, prefix) in a shuffled order into a fresh RIB
    final: dict = {}
    for peer, prefix, a in ops:
        final[(peer, prefix)] = a
    items = list(final.items())
    random.shuffle(items)
    other = Rib()
    changed = set()
    for (peer, prefix), a in items:
        changed |= other.apply(_update(peer, prefix, a))
    assert other.best() == rib.best()
    assert set(rib.best()) <= changed
    # and it equals selecting directly from the surviving paths
    for prefix, best in rib.best().items():
        survivors = [u.announced[0] for (pe, pr), a in final.items() if pr == prefix and a is not None
                     for u in [_update(pe, pr, a)]]
        assert best == select_best(survivors)
