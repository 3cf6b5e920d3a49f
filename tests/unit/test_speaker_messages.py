"""The ExaBGP JSON API contract, pinned with lines recorded from real ExaBGP 5.0.15 (tests/fixtures/exabgp)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest

from bgpnet.model import Path
from bgpnet.speaker.messages import (
    EndOfRib,
    MessageError,
    Notification,
    PeerDown,
    PeerUp,
    SpeakerShutdown,
    Update,
    parse_message,
)

A, N = IPv4Address, IPv4Network
PEER = A("10.77.0.2")


@pytest.fixture
def line(fixtures_dir):
    return lambda name: (fixtures_dir / "exabgp" / name).read_text()


def test_state_up_and_connected(line):
    assert parse_message(line("state-up.json")) == [PeerUp(PEER, 65002)]
    assert parse_message(line("state-connected.json")) == []


def test_announce_with_attributes(line):
    [u] = parse_message(line("update-announce-ebgp-attributes.json"))
    assert u == Update(PEER, (Path(N("10.99.1.0/26"), PEER, PEER, 65002, (65002, 65010), 100, 50, "egp",
                                   ("65002:100", "65002:200"), ("65002:1:2",), ibgp=False),), ())
    # compare=False fields are checked explicitly
    assert u.announced[0].communities == ("65002:100", "65002:200")
    assert u.announced[0].large_communities == ("65002:1:2",)


def test_announce_two_prefixes_share_attributes(line):
    [u] = parse_message(line("update-announce-two-prefixes.json"))
    assert [p.prefix for p in u.announced] == [N("10.99.2.0/26"), N("10.99.3.0/26")]
    assert all(p.as_path == (65002,) and p.origin == "igp" and p.next_hop == PEER for p in u.announced)


def test_ibgp_local_pref_and_next_hop(line):
    [u] = parse_message(line("update-announce-ibgp-local-pref.json"))
    [p] = u.announced
    assert (p.local_pref, p.med, p.origin, p.as_path, p.ibgp) == (300, 10, "incomplete", (), True)
    assert p.communities == ("65001:7",)
    [u] = parse_message(line("update-announce-ibgp-third-party-next-hop.json"))
    [p] = u.announced
    assert p.next_hop == A("10.77.0.9") and p.peer == PEER and p.as_path == (65020,) and p.local_pref == 100


def test_withdraw_and_eor(line):
    assert parse_message(line("update-withdraw.json")) == [Update(PEER, (), (N("10.99.2.0/26"),))]
    assert parse_message(line("update-eor.json")) == [EndOfRib(PEER)]


def test_session_ends(line):
    # peer stopped with SIGTERM, or killed -9: both are a bare TCP close as ExaBGP reports them
    for name in ("state-down-peer-sigterm.json", "state-down-peer-kill9.json"):
        assert parse_message(line(name)) == [PeerDown(PEER, "closing connection", False)]
    assert parse_message(line("state-down-reload-changed-gr.json"))[0].notification is False
    assert parse_message(line("state-down-notification-received.json")) == [
        PeerDown(PEER, "notification received (6,2)", True)]
    assert parse_message(line("state-down-notification-sent.json")) == [
        PeerDown(A("10.77.0.1"), "notification sent (6,2)", True)]
    assert parse_message(line("state-down-local-shutdown.json"))[0].notification is False


def test_notification_and_shutdown(line):
    assert parse_message(line("notification-received-cease.json")) == [
        Notification(PEER, 6, 2, 'Shutdown Communication: "Administrative Shutdown"')]
    assert parse_message(line("process-shutdown.json")) == [SpeakerShutdown()]


def test_acks_are_skipped(line):
    assert parse_message(line("ack-done.txt")) == []
    assert parse_message(line("ack-error.txt")) == []
    assert parse_message("") == []


def test_whole_recorded_session_parses(fixtures_dir):
    text = (fixtures_dir / "exabgp" / "session-transcript-a.log").read_text()
    kinds = [type(e).__name__ for ln in text.splitlines() for e in parse_message(ln)]
    assert kinds.count("PeerUp") >= 3 and "EndOfRib" in kinds and "Notification" in kinds


def _base(line) -> dict:
    return json.loads(line("update-announce-ebgp-attributes.json"))


def test_other_families_are_ignored(line):
    msg = _base(line)
    msg["neighbor"]["message"]["update"]["announce"] = {"ipv6 unicast": {"fe80::1": [{"nlri": "2001:db8::/64"}]}}
    assert parse_message(json.dumps(msg)) == []
    msg["neighbor"]["message"] = {"eor": {"afi": "ipv6", "safi": "unicast"}}
    assert parse_message(json.dumps(msg)) == []


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m.pop("type"), "missing 'type'"),
        (lambda m: m["neighbor"]["address"].update(peer="not-an-ip"), "neighbor.address.peer: not an IPv4 address"),
        (lambda m: m["neighbor"]["asn"].update(peer="65002"), "neighbor.asn.peer: expected int"),
        (lambda m: m["neighbor"]["message"]["update"]["announce"]["ipv4 unicast"].update(
            {"10.77.0.2": [{"nlri": "10.99.1.1/26"}]}), "not an IPv4 prefix"),
        (lambda m: m["neighbor"]["message"]["update"]["announce"]["ipv4 unicast"].update(
            {"10.77.0.2": [{"nlri": "10.99.1.0/26"}, {"nlri": 5}]}), "nlri: expected str, got int 5"),
        (lambda m: m["neighbor"]["message"]["update"]["announce"]["ipv4 unicast"].update(
            {"10.77.0.2": [{"nlri": "10.99.1.0/26"}, "10.99.2.0/26"]}), "expected an object, got str"),
        (lambda m: m["neighbor"]["message"]["update"]["announce"]["ipv4 unicast"].update(
            {"10.77.0.2": [{"prefix": "10.99.1.0/26"}]}), "missing 'nlri'"),
        (lambda m: m["neighbor"]["message"]["update"].update(withdraw={"ipv4 unicast": [{"nlri": None}]}),
         "update.withdraw.ipv4 unicast.nlri: expected str"),
        (lambda m: m["neighbor"]["message"]["update"]["attribute"].update(origin="bgp"), "unknown origin"),
        (lambda m: m["neighbor"]["message"]["update"]["attribute"].update(med=-3), "attribute.med"),
        (lambda m: m["neighbor"]["message"]["update"]["attribute"].update(community=[[1, 2, 3]]), "community"),
        (lambda m: m["neighbor"]["message"]["update"].update(announce=[]), "update.announce: expected"),
        (lambda m: m["neighbor"].pop("message"), "missing 'message'"),
    ],
)
def test_malformed_structure_is_named(line, mutate, message):
    msg = _base(line)
    mutate(msg)
    with pytest.raises(MessageError, match=message.replace("(", r"\(")):
        parse_message(json.dumps(msg))


def test_not_json():
    with pytest.raises(MessageError, match="not JSON"):
        parse_message('{ "exabgp": "5.0.0", "type": ')
    with pytest.raises(MessageError, match="expected a JSON object"):
        parse_message("[1, 2]")
