"""Speaker's command logic against a fake relay connection: what it tells ExaBGP on each event."""

from __future__ import annotations

import json
import logging
from ipaddress import IPv4Address, IPv4Network

import pytest

from bgpnet.errors import ConfigError
from bgpnet.speaker.messages import PeerDown, PeerUp, SpeakerShutdown
from bgpnet.speaker.render import Neighbor
from bgpnet.speaker.speaker import Speaker

A, N = IPv4Address, IPv4Network
B, C = A("10.0.0.2"), A("10.0.0.3")
NET1, NET2 = N("10.10.1.0/26"), N("10.10.2.0/26")


class FakeWriter:
    def __init__(self):
        self.lines: list[str] = []

    def write(self, data: bytes) -> None:
        self.lines.extend(data.decode().splitlines())

    def is_closing(self) -> bool:
        return False

    def take(self) -> list[str]:
        out, self.lines = self.lines, []
        return out


@pytest.fixture
def speaker(tmp_path):
    events = []
    s = Speaker(tmp_path, events.append, A("10.0.0.1"))
    s.events = events
    s._neighbors = {p: Neighbor(p, 64512, A("10.0.0.1"), 64512, A("10.0.0.1")) for p in (B, C)}
    s._writer = FakeWriter()
    return s


def test_announcements_diff_to_every_configured_neighbour(speaker):
    speaker.set_announcements({NET1: {}})
    assert speaker._writer.take() == [
        f"neighbor {B} announce route {NET1} next-hop self",
        f"neighbor {C} announce route {NET1} next-hop self",
    ]
    speaker.set_announcements({NET1: {}})
    assert speaker._writer.take() == []  # nothing changed, nothing sent
    speaker.set_announcements({NET2: {"communities": ["64512:1"]}})
    assert speaker._writer.take() == [
        f"neighbor {B} withdraw route {NET1}",
        f"neighbor {B} announce route {NET2} next-hop self community [ 64512:1 ]",
        f"neighbor {C} withdraw route {NET1}",
        f"neighbor {C} announce route {NET2} next-hop self community [ 64512:1 ]",
    ]


def test_peer_up_reannounces_everything_then_eor(speaker):
    speaker.set_announcements({NET1: {}, NET2: {}})
    speaker._writer.take()
    speaker._on_line('{"type": "state", "neighbor": {"address": {"local": "10.0.0.1", "peer": "10.0.0.2"}, '
                     '"asn": {"local": 64512, "peer": 64512}, "state": "up"}}')
    assert speaker._writer.take() == [
        f"neighbor {B} announce route {NET1} next-hop self",
        f"neighbor {B} announce route {NET2} next-hop self",
        f"neighbor {B} announce eor ipv4 unicast",
    ]
    assert speaker.established == {B} and speaker.events == [PeerUp(B, 64512)]
    speaker._on_line('{"type": "state", "neighbor": {"address": {"local": "10.0.0.1", "peer": "10.0.0.2"}, '
                     '"asn": {"local": 64512, "peer": 64512}, "state": "down", "reason": "closing connection"}}')
    assert speaker.established == set() and speaker.events[-1] == PeerDown(B, "closing connection", False)


def test_withdrawal_while_no_relay_is_sent_on_reconnect(speaker):
    speaker.set_announcements({NET1: {}})
    speaker._writer.take()
    speaker._writer = None  # relay gone (ExaBGP respawns it)
    speaker.set_announcements({})
    speaker._relay_connected(FakeWriter())
    assert speaker._writer.take() == [f"neighbor {B} withdraw route {NET1}", f"neighbor {C} withdraw route {NET1}"]


def test_respawned_relay_gets_everything_again(speaker):
    speaker.set_announcements({NET1: {}})
    speaker._writer.take()
    speaker._relay_connected(FakeWriter())  # commands may have been lost with the old relay
    assert speaker._writer.take() == [
        f"neighbor {B} announce route {NET1} next-hop self",
        f"neighbor {C} announce route {NET1} next-hop self",
    ]


def test_malformed_lines_are_logged_and_skipped(speaker, caplog):
    with caplog.at_level(logging.ERROR):
        speaker._on_line('{"type": "update", "neighbor": {}}')
        speaker._on_line("garbage")
    assert speaker.malformed == 2 and speaker.events == []
    assert "garbage" in caplog.text and "missing 'address'" in caplog.text
    speaker._on_line("done")
    speaker._on_line("error")
    assert speaker.errors == 1


def test_shutdown_reported_once(speaker):
    speaker._on_line('{"type": "notification", "notification": "shutdown"}')
    speaker._lost_exabgp()
    assert speaker.events == [SpeakerShutdown()]


def test_unknown_attribute_refused_and_nothing_changes(speaker):
    speaker.set_announcements({NET1: {}})
    speaker._writer.take()
    with pytest.raises(ConfigError, match="unknown route attribute 'colour'"):
        speaker.set_announcements({NET2: {"colour": "red"}})
    assert speaker._writer.take() == [] and set(speaker._desired) == {NET1}


def test_md5_password_masked_in_exabgp_output():
    from bgpnet.speaker.speaker import _mask

    assert "s3cret" not in _mask('neighbor 1.2.3.4 { md5-password "s3cret"; }')


def test_crashing_exabgp_is_restarted_with_growing_backoff(tmp_path, monkeypatch):
    """A fake `exabgp` that dies at once: the Speaker reports each loss and waits longer each time."""
    import asyncio
    import time

    from bgpnet.speaker import speaker as speaker_mod

    launches = tmp_path / "launches"
    fake = tmp_path / "exabgp"
    fake.write_text(f'#!/bin/sh\n[ "$1" = validate ] && exit 0\necho "$(date +%s.%N)" >> {launches}\nexit 3\n')
    fake.chmod(0o755)
    monkeypatch.setattr(speaker_mod, "exabgp_executable", lambda: str(fake))
    monkeypatch.setattr(speaker_mod, "BACKOFF_MIN", 0.05)

    events = []

    async def scenario():
        s = Speaker(tmp_path / "run", events.append, A("10.0.0.1"))
        await s.start([Neighbor(B, 64512, A("10.0.0.1"), 64512, A("10.0.0.1"))])
        deadline = time.monotonic() + 20
        while s.restarts < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await s.stop()
        return s.restarts

    restarts = asyncio.run(scenario())
    assert restarts >= 4
    times = [float(x) for x in launches.read_text().split()]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    for i, gap in enumerate(gaps[:3]):
        assert gap >= 0.05 * 2**i, gaps  # never a busy loop: each wait at least the doubled backoff
    # one SpeakerShutdown per lost process (the last from stop() when the process was already gone)
    assert events.count(SpeakerShutdown()) >= restarts


def test_peer_routes_go_only_to_their_neighbour_and_diff(speaker):
    speaker.set_announcements({NET1: {}})
    speaker._writer.take()
    reflected = {"next_hop": "10.0.0.3", "originator_id": "10.0.0.3", "cluster_list": ["10.0.0.1"]}
    speaker.set_peer_routes({B: {NET2: reflected}})
    assert speaker._writer.take() == [
        f"neighbor {B} announce route {NET2} next-hop 10.0.0.3 originator-id 10.0.0.3 cluster-list [ 10.0.0.1 ]"]
    speaker.set_peer_routes({B: {NET2: reflected}})
    assert speaker._writer.take() == []
    speaker.set_peer_routes({C: {NET1: reflected}})  # our own announcement wins over a reflected copy
    assert speaker._writer.take() == [f"neighbor {B} withdraw route {NET2}"]
    assert speaker.desired_for(C) == {NET1: {}}


def test_bad_reflected_attribute_refused(speaker):
    with pytest.raises(ConfigError, match="cluster_list"):
        speaker.set_peer_routes({B: {NET2: {"cluster_list": "10.0.0.1"}}})
    assert speaker._writer.take() == []


def test_held_end_of_rib_goes_out_on_release_after_the_routes(speaker):
    speaker.hold_eor = True
    speaker.set_announcements({NET1: {}})
    speaker._writer.take()
    for peer in ("10.0.0.2", "10.0.0.3"):
        speaker._on_line(json.dumps({"type": "state", "state": "up", "neighbor": {
            "address": {"local": "10.0.0.1", "peer": peer}, "asn": {"local": 64512, "peer": 64512}, "state": "up"}}))
    speaker._on_line('{"type": "state", "neighbor": {"address": {"local": "10.0.0.1", "peer": "10.0.0.3"}, '
                     '"asn": {"local": 64512, "peer": 64512}, "state": "down", "reason": "gone"}}')
    assert not any("eor" in line for line in speaker._writer.take())
    speaker.set_peer_routes({B: {NET2: {"next_hop": "10.0.0.3"}}})
    speaker.release_eor()
    assert speaker._writer.take() == [f"neighbor {B} announce route {NET2} next-hop 10.0.0.3",
                                      f"neighbor {B} announce eor ipv4 unicast"]  # not to C: it went down
    assert not speaker.hold_eor
