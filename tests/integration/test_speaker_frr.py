"""Our Speaker (ExaBGP) peering over eBGP with a real FRR 8 (zebra + bgpd) in another namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from bgpnet.lab.netns import kill_pid, veth, wait_for
from tests.integration.speaker_helpers import DemoPeer, announced, event

SPK_IP, FRR_IP = "10.233.0.1", "10.233.0.2"
OUR_NET, FRR_NET = "10.234.1.0/26", "10.235.7.0/24"


@pytest.fixture(params=[None, "s3cret-md5"], ids=["plain", "md5"])
def frr(request, netns_factory, tmp_path):
    if not os.path.exists("/usr/lib/frr/bgpd"):
        pytest.fail("FRR is not installed (apt-get install -y frr)")
    spk_ns, frr_ns = netns_factory("spk"), netns_factory("frr")
    veth(spk_ns, "eth1", frr_ns, "eth1")
    spk_ns.run("ip", "addr", "add", f"{SPK_IP}/24", "dev", "eth1")
    frr_ns.run("ip", "addr", "add", f"{FRR_IP}/24", "dev", "eth1")
    # the route FRR originates must be in its RIB: a static blackhole covers it
    frr_ns.run("ip", "route", "add", "blackhole", FRR_NET)

    # FRR drops to user frr, which cannot enter pytest's 0700 tmp_path: use a dir of its own
    d = Path(tempfile.mkdtemp(prefix="bgpnet-frr-"))
    os.chmod(d, 0o755)
    (d / "bgpd.conf").write_text(f"""\
frr defaults datacenter
hostname tor
router bgp 65100
 bgp router-id {FRR_IP}
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor {SPK_IP} remote-as 65001
 neighbor {SPK_IP} timers 3 9
{f" neighbor {SPK_IP} password {request.param}" if request.param else ""}
 address-family ipv4 unicast
  network {FRR_NET}
 exit-address-family
""")
    (d / "zebra.conf").write_text("hostname tor\n")
    shutil.chown(d, "frr", "frr")
    for f in d.iterdir():
        shutil.chown(f, "frr", "frr")
    procs = []
    zserv = d / "zserv.api"
    for daemon in ("zebra", "bgpd"):
        argv = [f"/usr/lib/frr/{daemon}", "-f", str(d / f"{daemon}.conf"), "-i", str(d / f"{daemon}.pid"),
                "-z", str(zserv), "--vty_socket", str(d), "-u", "frr", "-g", "frr"]
        log = open(tmp_path / f"{daemon}.log", "wb")  # noqa: SIM115 - closed with the test
        procs.append((frr_ns.popen(argv, stdout=log, stderr=subprocess.STDOUT), log))
        if daemon == "zebra":
            wait_for(zserv.exists, 20, what="zebra's zserv socket")

    def vtysh(cmd: str) -> str:
        return frr_ns.run("vtysh", "--vty_socket", str(d), "-c", cmd, timeout=20)

    yield spk_ns, vtysh, tmp_path, request.param
    for p, log in reversed(procs):
        kill_pid(p.pid)
        log.close()
    shutil.rmtree(d, ignore_errors=True)


def test_exabgp_and_frr_exchange_routes(frr):
    spk_ns, vtysh, tmp_path, md5 = frr
    spec = {
        "run_dir": str(tmp_path / "spk"),
        "listen": SPK_IP,
        "neighbors": [{"address": FRR_IP, "peer_asn": 65100, "local_address": SPK_IP, "local_asn": 65001,
                       "router_id": SPK_IP, "name": "tor", "hold_time": 9, "md5_password": md5}],
        "announce": {OUR_NET: {"communities": ["65001:42"]}},
    }
    spk = DemoPeer(spk_ns, spec, tmp_path / "spk.err")
    try:
        spk.wait(event("PeerUp", peer=FRR_IP), 60, what="session with FRR")
        got = spk.wait(announced(FRR_NET, FRR_IP), 30, what=f"{FRR_NET} from FRR")
        path = next(p for p in got["announced"] if p["prefix"] == FRR_NET)
        assert path["as_path"] == [65100] and path["peer_asn"] == 65100 and not path["ibgp"]

        def frr_has_ours():
            routes = json.loads(vtysh("show bgp ipv4 unicast json")).get("routes", {})
            return routes.get(OUR_NET)

        entries = wait_for(frr_has_ours, 30, what=f"{OUR_NET} in FRR's BGP table")
        entry = entries[0]
        assert entry["nexthops"][0]["ip"] == SPK_IP
        assert (entry["path"], entry["origin"], entry["bestpath"]) == ("65001", "IGP", True)
        detail = json.loads(vtysh(f"show bgp ipv4 unicast {OUR_NET} json"))
        assert "65001:42" in json.dumps(detail)

        # withdrawal reaches FRR
        spk.send({"announce": {}})
        deadline = time.monotonic() + 30
        while frr_has_ours() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not frr_has_ours()
    finally:
        spk.close()
    if md5:  # the password lives only in the root-only config, never in a log
        run_dir = tmp_path / "spk"
        assert (run_dir / "exabgp.conf").stat().st_mode & 0o777 == 0o600
        for log_file in [*run_dir.glob("exabgp.log*"), tmp_path / "spk.err"]:
            assert md5 not in log_file.read_text(errors="replace"), log_file
