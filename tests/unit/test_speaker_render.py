"""ExaBGP config and command rendering; the rendered config is also parsed by ExaBGP itself."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from bgpnet.errors import ConfigError
from bgpnet.speaker.render import (
    Neighbor,
    announce_command,
    eor_command,
    exabgp_env,
    relay_argv,
    render_exabgp_config,
    withdraw_command,
)
from bgpnet.speaker.speaker import exabgp_executable

A = IPv4Address
RELAY = relay_argv("/usr/bin/python3", Path("/opt/bgpnet"), Path("/run/bgpnet/api.sock"))


def mesh_peer(**kw) -> Neighbor:
    base = dict(address=A("10.0.0.2"), peer_asn=64512, local_address=A("10.0.0.1"), local_asn=64512,
                router_id=A("10.0.0.1"))
    return Neighbor(**{**base, **kw})


EXPECTED_ONE = """\
# Rendered by bgpnet; do not edit (rewritten on every change).
process bgpnet {
    run /usr/bin/env PYTHONPATH=/opt/bgpnet /usr/bin/python3 -m bgpnet.speaker.relay /run/bgpnet/api.sock;
    encoder json;
}

neighbor 10.0.0.2 {
    description "node-b";
    router-id 10.0.0.1;
    local-address 10.0.0.1;
    local-as 64512;
    peer-as 64512;
    hold-time 90;
    passive false;
    manual-eor true;
    capability {
        graceful-restart 120;
        route-refresh enable;
    }
    family {
        ipv4 unicast;
    }
    api {
        processes [ bgpnet ];
        neighbor-changes;
        receive {
            parsed;
            update;
            notification;
        }
    }
}
"""


def test_render_one_mesh_peer():
    assert render_exabgp_config([mesh_peer(name="node-b")], RELAY) == EXPECTED_ONE


def test_render_options_and_order():
    tor = Neighbor(A("192.168.1.1"), 65000, A("192.168.1.10"), 65101, A("192.168.1.10"), name="tor",
                   passive=True, hold_time=30, port=1179, md5_password="s3cret", multihop=2, graceful_restart=0)
    rr = mesh_peer(address=A("10.0.0.9"), route_reflector_client=True, cluster_id=A("1.1.1.1"))
    text = render_exabgp_config([tor, rr, mesh_peer()], RELAY)
    # sorted by peer address, whatever the input order
    assert text.index("neighbor 10.0.0.2 {") < text.index("neighbor 10.0.0.9 {") < text.index("neighbor 192.168.1.1 {")
    tor_block = text[text.index("neighbor 192.168.1.1 {"):]
    for line in ("passive true;", "hold-time 30;", "connect 1179;", 'md5-password "s3cret";',
                 "outgoing-ttl 2;", "graceful-restart disable;", "peer-as 65000;", "local-as 65101;"):
        assert f"    {line}" in tor_block, line
    assert "# route-reflector-client cluster-id 1.1.1.1" in text
    assert "connect" not in text[: text.index("neighbor 192.168.1.1 {")]


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(peer_asn=0), "peer_asn 0"),
        (dict(hold_time=2), "hold_time 2s"),
        (dict(md5_password="has space"), "md5_password"),
        (dict(md5_password="x" * 81), "md5_password"),
        (dict(port=70000), "port 70000"),
        (dict(name='a"b'), "name"),
        (dict(graceful_restart=5000), "graceful_restart"),
    ],
)
def test_bad_neighbor_is_refused_by_name(kw, message):
    with pytest.raises(ConfigError) as e:
        render_exabgp_config([mesh_peer(**kw)], RELAY)
    assert message in str(e.value) and "neighbor 10.0.0.2" in str(e.value)


def test_duplicate_neighbor_refused():
    with pytest.raises(ConfigError, match="defined twice"):
        render_exabgp_config([mesh_peer(), mesh_peer(name="again")], RELAY)


def test_exabgp_accepts_rendered_config(tmp_path):
    """ExaBGP 5.0.15's own parser (`exabgp validate -n`) loads every neighbour we render."""
    neighbors = [
        mesh_peer(name="node-b"),
        Neighbor(A("192.168.1.1"), 65000, A("192.168.1.10"), 65101, A("192.168.1.10"), name="tor",
                 passive=True, hold_time=30, port=1179, md5_password="s3cret", multihop=2, graceful_restart=0),
        mesh_peer(address=A("10.0.0.9"), route_reflector_client=True, cluster_id=A("1.1.1.1")),
    ]
    relay = relay_argv(sys.executable, Path("/opt/bgpnet"), tmp_path / "api.sock")
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_exabgp_config(neighbors, relay))
    env = exabgp_env(A("10.0.0.1"), 179, tmp_path) | {"exabgp_log_configuration": "true"}
    p = subprocess.run([exabgp_executable(), "validate", "-n", str(conf)], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", **env}, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout + p.stderr
    for peer in ("10.0.0.2", "10.0.0.9", "192.168.1.1"):
        assert f"neighbor  {peer}" in out

    bad = tmp_path / "bad.conf"
    bad.write_text(conf.read_text().replace("hold-time 30;", "hold-time 1;"))
    p = subprocess.run([exabgp_executable(), "validate", "-n", str(bad)], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", **env}, timeout=60)
    assert p.returncode != 0 and "holdtime" in p.stdout + p.stderr


def test_env():
    env = exabgp_env(A("10.0.0.1"), 1790, Path("/run/x"))
    assert env["exabgp_tcp_bind"] == "10.0.0.1" and env["exabgp_tcp_port"] == "1790"
    assert env["exabgp_daemon_user"] == "root" and env["exabgp_daemon_drop"] == "false"
    assert env["exabgp_api_cli"] == "false" and env["exabgp_daemon_pid"] == "/run/x/exabgp.pid"
    assert exabgp_env(None, 179, Path("/run/x"))["exabgp_tcp_bind"] == ""


def test_commands():
    peer, net = A("10.0.0.2"), IPv4Network("10.10.1.0/26")
    assert announce_command(peer, net) == "neighbor 10.0.0.2 announce route 10.10.1.0/26 next-hop self"
    assert announce_command(peer, net, {"communities": ["65000:2", "65000:1"], "med": 5, "local_pref": 200,
                                        "large_communities": ["65000:1:1"]}) == (
        "neighbor 10.0.0.2 announce route 10.10.1.0/26 next-hop self local-preference 200 med 5 "
        "community [ 65000:1 65000:2 ] large-community [ 65000:1:1 ]"
    )
    assert withdraw_command(peer, net) == "neighbor 10.0.0.2 withdraw route 10.10.1.0/26"
    assert eor_command(peer) == "neighbor 10.0.0.2 announce eor ipv4 unicast"


@pytest.mark.parametrize("attrs, message", [
    ({"colour": 1}, "unknown route attribute 'colour'"),
    ({"communities": "65000:1"}, "communities must be a list"),
    ({"communities": ["65000:70000"]}, "0..65535"),
    ({"med": -1}, "med must be an integer"),
])
def test_bad_route_attributes(attrs, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        announce_command(A("10.0.0.2"), IPv4Network("10.10.1.0/26"), attrs)
