"""Import policy: only pool blocks, borrowed /32s and the allow-list; never defaults or hijacks."""

from ipaddress import IPv4Address, IPv4Network

from hypothesis import given
from hypothesis import strategies as st

from bgpnet.filters import build_rules, check_import, select_imports
from bgpnet.model import Path

N = IPv4Network
RULES = build_rules(pools=[N("10.244.0.0/16")], blocks=[N("10.244.2.0/26"), N("10.244.3.0/26")],
                    own=[N("10.244.1.0/26")], allow=[N("192.168.50.0/24")])


def path(prefix):
    return Path(N(prefix), IPv4Address("10.0.0.2"), IPv4Address("10.0.0.2"))


def test_known_block_accepted():
    assert check_import(N("10.244.2.0/26"), RULES) is None


def test_default_route_rejected_unless_asked():
    assert "default route" in check_import(N("0.0.0.0/0"), RULES)
    assert check_import(N("0.0.0.0/0"), build_rules([], [], [], accept_default=True)) is None


def test_more_specific_of_another_nodes_block_rejected():
    assert "more-specific of block 10.244.2.0/26" in check_import(N("10.244.2.0/27"), RULES)


def test_borrowed_host_route_accepted():
    assert check_import(N("10.244.2.7/32"), RULES) is None
    assert check_import(N("10.244.1.9/32"), RULES) is None  # borrowed from our own block by another node


def test_own_prefix_and_its_more_specifics_rejected():
    assert "own prefix" in check_import(N("10.244.1.0/26"), RULES)
    assert "more-specific of this node" in check_import(N("10.244.1.0/27"), RULES)


def test_outside_pools_rejected_allow_list_accepted():
    assert "outside every IP pool" in check_import(N("172.16.0.0/24"), RULES)
    assert check_import(N("192.168.50.128/25"), RULES) is None


def test_unknown_block_inside_pool_rejected():
    assert "not a known block" in check_import(N("10.244.9.0/24"), RULES)


def test_max_prefixes_keeps_first_arrivals():
    paths = [path(f"10.244.{i}.0/26") for i in range(2, 6)]
    rules = build_rules([N("10.244.0.0/16")], [p.prefix for p in paths], [])
    accepted, rejected, over = select_imports(paths, rules, max_prefixes=2)
    assert list(accepted) == [N("10.244.2.0/26"), N("10.244.3.0/26")]
    assert set(rejected) == {N("10.244.4.0/26"), N("10.244.5.0/26")}
    assert over and "max-prefixes limit 2" in rejected[N("10.244.4.0/26")]


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(16, 32)), max_size=40))
def test_every_prefix_is_either_accepted_or_rejected_with_reason(raw):
    paths = [path(str(N(f"10.244.{a}.{b}/{ln}", strict=False))) for a, b, ln in raw]
    accepted, rejected, _ = select_imports(paths, RULES)
    assert set(accepted) | set(rejected) == {p.prefix for p in paths}
    assert not set(accepted) & set(rejected)
    assert all(isinstance(r, str) and r for r in rejected.values())


def test_as_path_loop_rejected():
    looped = Path(N("10.244.2.0/26"), IPv4Address("10.0.0.1"), IPv4Address("10.0.0.1"), as_path=(65000, 64512))
    fine = Path(N("10.244.3.0/26"), IPv4Address("10.0.0.1"), IPv4Address("10.0.0.1"), as_path=(65000, 64999))
    accepted, rejected, _ = select_imports([looped, fine], RULES, local_asn=64512)
    assert list(accepted) == [N("10.244.3.0/26")]
    assert "contains our AS 64512 (loop)" in rejected[N("10.244.2.0/26")]
