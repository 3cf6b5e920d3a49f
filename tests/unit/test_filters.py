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


def reference_check_import(prefix, rules):
    """check_import as first written, with IPv4Network.subnet_of: the oracle for the integer version."""
    if prefix == N("0.0.0.0/0"):
        return None if rules.accept_default else "default route not accepted (accept_default is off)"
    for own in rules.own:
        if prefix == own:
            return f"{prefix} is this node's own prefix"
        if prefix.subnet_of(own) and prefix.prefixlen < 32:
            return f"{prefix} is a more-specific of this node's prefix {own}"
    if any(prefix.subnet_of(net) for net in rules.allow):
        return None
    if prefix in rules.blocks:
        return None
    covering = sorted((b for b in rules.blocks if prefix.subnet_of(b)), key=lambda b: b.prefixlen)
    if prefix.prefixlen == 32 and any(prefix.subnet_of(p) for p in rules.pools):
        return None
    if covering:
        return f"{prefix} is a more-specific of block {covering[0]}"
    if any(prefix.subnet_of(p) for p in rules.pools):
        return f"{prefix} is inside a pool but is not a known block"
    return f"{prefix} is outside every IP pool and the allow-list"


# prefixes from a small space, so that pools, blocks, own prefixes and candidates often nest
small_nets = st.builds(lambda a, n: IPv4Network((0x0AF40000 + (a << 4), n), strict=False),
                       st.integers(0, 4095), st.integers(14, 32))


@given(st.lists(small_nets, max_size=3), st.lists(small_nets, max_size=8), st.lists(small_nets, max_size=2),
       st.lists(small_nets, max_size=2), st.booleans(), st.lists(small_nets, min_size=1, max_size=10))
def test_check_import_agrees_with_subnet_of(pools, blocks, own, allow, accept_default, candidates):
    rules = build_rules(pools, blocks, own, allow, accept_default)
    for prefix in [*candidates, N("0.0.0.0/0"), *blocks[:2]]:
        assert check_import(prefix, rules) == reference_check_import(prefix, rules)
