"""bgpnet-cni, a CNI 1.0.0 plugin: a veth into the pod, an address from bgpnet IPAM, a /32 route to the pod.

Run by the container runtime inside the node's network namespace (the host). Network config::

    {"cniVersion": "1.0.0", "name": "bgpnet", "type": "bgpnet-cni", "mtu": 1500 (optional),
     "ipam": {"type": "bgpnet", "datastore": {"type": "local", "path": "/var/lib/bgpnet/store.db"},
              "node": "n1", "mode": "blocks", "strict_affinity": false, "pools": []},
     "args": {"bgpnet": {"labels": {"app": "web"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}}

`ipam.node` may be left out: then $NODE_NAME, then the file `ipam.nodename_file`
(default /var/lib/bgpnet/nodename), then the host name. The pod's namespace and name come from
CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME, as kubelet passes them); its labels and ports from the
`args.bgpnet` convention above. ADD writes the Pod record (node, ip, labels, ports, netns, interface).
The pod's default route goes via 169.254.1.1 on eth0 (as Calico does): the host veth answers ARP for
it by proxy ARP, and the pod also gets a permanent neighbour entry for it, so it works even when the
host has no route to 169.254.1.1.

Error codes: the spec's 1 (version), 3 (netns missing), 4 (environment), 6 (decode), 7 (config),
11 (datastore busy); 5 for netlink/sysctl failures; 100 no address available / no pool;
101 CHECK found the pod's network different from prevResult.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sys
from ipaddress import IPv4Address, IPv4Network
from typing import Any

log = logging.getLogger(__name__)

CNI_VERSION = "1.0.0"
SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
GATEWAY = "169.254.1.1"
HOST_IF_PREFIX = "cali"
DEFAULT_MTU = 1500
DEFAULT_NODENAME_FILE = "/var/lib/bgpnet/nodename"

ERR_VERSION, ERR_UNSUPPORTED_FIELD, ERR_NO_CONTAINER, ERR_ENV, ERR_IO, ERR_DECODE, ERR_CONFIG = 1, 2, 3, 4, 5, 6, 7
ERR_TRY_AGAIN = 11
ERR_NO_ADDRESS = 100
ERR_CHECK = 101


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def to_json(self, version: str = CNI_VERSION) -> dict[str, Any]:
        out = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def host_ifname(container_id: str) -> str:
    """Host side of the pod's veth: the prefix plus a hash of the container id, 15 characters."""
    return HOST_IF_PREFIX + hashlib.sha1(container_id.encode()).hexdigest()[:15 - len(HOST_IF_PREFIX)]


def parse_cni_args(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, (text or "").split(";")):
        if "=" not in part:
            raise CniError(ERR_ENV, f"CNI_ARGS: {part!r} is not KEY=VALUE")
        k, v = part.split("=", 1)
        out[k] = v
    return out


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


# ---------------------------------------------------------------------------------------- the request

class Request:
    """The validated invocation: environment plus network config."""

    def __init__(self, env: dict[str, str], stdin: str):
        self.command = env.get("CNI_COMMAND", "")
        if not self.command:
            raise CniError(ERR_ENV, "CNI_COMMAND is not set")
        if self.command not in ("ADD", "DEL", "CHECK", "VERSION"):
            raise CniError(ERR_ENV, f"CNI_COMMAND {self.command!r} is not ADD, DEL, CHECK or VERSION")
        self.env = env
        self.version = CNI_VERSION
        if self.command == "VERSION":
            return
        try:
            conf = json.loads(stdin)
        except json.JSONDecodeError as e:
            raise CniError(ERR_DECODE, "network config on stdin is not valid JSON", str(e)) from None
        if not isinstance(conf, dict):
            raise CniError(ERR_DECODE, f"network config must be a JSON object, got {type(conf).__name__}")
        self.conf = conf
        version = conf.get("cniVersion")
        if not isinstance(version, str) or not version:
            raise CniError(ERR_CONFIG, "network config: cniVersion is missing")
        if version not in SUPPORTED_VERSIONS:
            raise CniError(ERR_VERSION, f"cniVersion {version} is not supported (supported: "
                           f"{', '.join(SUPPORTED_VERSIONS)})")
        self.version = version
        if self.command == "CHECK" and _version_tuple(version) < (0, 4, 0):
            raise CniError(ERR_VERSION, f"CHECK needs cniVersion 0.4.0 or later, config has {version}")
        for key in ("name", "type"):
            if not isinstance(conf.get(key), str) or not conf[key]:
                raise CniError(ERR_CONFIG, f"network config: `{key}` is missing or not a string")
        ipam = conf.get("ipam")
        if not isinstance(ipam, dict):
            raise CniError(ERR_CONFIG, "network config: `ipam` section is missing")
        if ipam.get("type") != "bgpnet":
            raise CniError(ERR_CONFIG, f"network config: ipam.type must be \"bgpnet\", not {ipam.get('type')!r}")
        self.ipam = ipam
        self.mode = ipam.get("mode", "blocks")
        if self.mode not in ("blocks", "pod-cidr"):
            raise CniError(ERR_CONFIG, f"network config: ipam.mode must be blocks or pod-cidr, not {self.mode!r}")
        if not isinstance(ipam.get("strict_affinity", False), bool):
            raise CniError(ERR_CONFIG, "network config: ipam.strict_affinity must be true or false")
        self.pools = ipam.get("pools") or []
        if not isinstance(self.pools, list) or not all(isinstance(p, str) for p in self.pools):
            raise CniError(ERR_CONFIG, "network config: ipam.pools must be a list of pool names")
        # no `mtu` in the network config: the node's agent publishes the right one (tunnel MTU with
        # encapsulation) on its Node record, read at ADD time
        self.mtu = conf.get("mtu")
        if self.mtu is not None and (isinstance(self.mtu, bool) or not isinstance(self.mtu, int)
                                     or not 576 <= self.mtu <= 65535):
            raise CniError(ERR_CONFIG, f"network config: mtu must be an integer 576..65535, not {self.mtu!r}")
        ext = (conf.get("args") or {}).get("bgpnet") or {}
        if not isinstance(ext, dict):
            raise CniError(ERR_CONFIG, "network config: args.bgpnet must be an object")
        self.labels = ext.get("labels") or {}
        if not isinstance(self.labels, dict) or not all(isinstance(v, str) for v in self.labels.values()):
            raise CniError(ERR_CONFIG, "network config: args.bgpnet.labels must map names to strings")
        self.ports = ext.get("ports") or []
        if not isinstance(self.ports, list) or not all(isinstance(p, dict) for p in self.ports):
            raise CniError(ERR_CONFIG, "network config: args.bgpnet.ports must be a list of {name, port, protocol}")

        self.container_id = env.get("CNI_CONTAINERID", "")
        self.netns = env.get("CNI_NETNS", "")
        self.ifname = env.get("CNI_IFNAME", "")
        for var, val in (("CNI_CONTAINERID", self.container_id), ("CNI_IFNAME", self.ifname)):
            if not val:
                raise CniError(ERR_ENV, f"{var} is not set")
        if self.command in ("ADD", "CHECK") and not self.netns:
            raise CniError(ERR_ENV, "CNI_NETNS is not set")
        if self.command != "DEL" and "CNI_PATH" not in env:
            raise CniError(ERR_ENV, "CNI_PATH is not set")
        if len(self.ifname) > 15 or "/" in self.ifname:
            raise CniError(ERR_ENV, f"CNI_IFNAME {self.ifname!r} is not a valid interface name")
        args = parse_cni_args(env.get("CNI_ARGS", ""))
        ns, name = args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")
        self.pod = f"{ns}/{name}" if ns and name else None
        self.handle = f"{conf['name']}.{self.container_id}".lower()
        self.node = self._node_name()

    def _node_name(self) -> str:
        if self.ipam.get("node"):
            return str(self.ipam["node"])
        if self.env.get("NODE_NAME"):
            return self.env["NODE_NAME"]
        path = self.ipam.get("nodename_file", DEFAULT_NODENAME_FILE)
        try:
            with open(path) as f:
                name = f.read().strip()
            if name:
                return name
        except OSError:
            pass
        return socket.gethostname()

    def open_store(self):
        from bgpnet.config import DatastoreConfig, build
        from bgpnet.datastore import open_datastore
        from bgpnet.errors import ConfigError

        try:
            cfg = build(DatastoreConfig, self.ipam.get("datastore") or {}, "ipam.datastore")
        except ConfigError as e:
            raise CniError(ERR_CONFIG, f"network config: {e}") from None
        return open_datastore(cfg)


# ------------------------------------------------------------------------------------------- netlink

def _sysctl(path: str, value: str) -> None:
    with open(f"/proc/sys/net/{path}", "w") as f:
        f.write(value)


def _wire(req: Request, ip: IPv4Address) -> dict[str, Any]:
    """Create the veth pair and configure both ends; returns the interfaces' names and MACs."""
    from pyroute2 import IPRoute

    host_if = host_ifname(req.container_id)
    tmp_if = "tmp" + host_if[len(HOST_IF_PREFIX):]
    fd = os.open(req.netns, os.O_RDONLY)
    try:
        with IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=host_if):  # a retried ADD: start from a clean pair
                ipr.link("del", index=idx)
            ipr.link("add", ifname=host_if, kind="veth", mtu=req.mtu,
                     peer={"ifname": tmp_if, "net_ns_fd": fd, "mtu": req.mtu})
            host_idx = ipr.link_lookup(ifname=host_if)[0]
            host_mac = ipr.get_links(host_idx)[0].get_attr("IFLA_ADDRESS")
            ipr.link("set", index=host_idx, state="up")
    finally:
        os.close(fd)
    _sysctl("ipv4/ip_forward", "1")
    _sysctl(f"ipv4/conf/{host_if}/proxy_arp", "1")
    _sysctl(f"ipv4/neigh/{host_if}/proxy_delay", "0")
    _sysctl(f"ipv4/conf/{host_if}/forwarding", "1")
    with IPRoute(netns=req.netns, flags=0) as pod:
        if pod.link_lookup(ifname=req.ifname):
            raise CniError(ERR_IO, f"interface {req.ifname} already exists in {req.netns}")
        idx = pod.link_lookup(ifname=tmp_if)[0]
        pod.link("set", index=idx, ifname=req.ifname)
        pod.link("set", index=idx, state="up")
        pod_mac = pod.get_links(idx)[0].get_attr("IFLA_ADDRESS")
        pod.addr("add", index=idx, address=str(ip), prefixlen=32)
        pod.route("add", dst=f"{GATEWAY}/32", oif=idx, scope=253)
        pod.route("add", dst="0.0.0.0/0", gateway=GATEWAY, oif=idx)
        pod.neigh("replace", dst=GATEWAY, lladdr=host_mac, ifindex=idx, state=0x80)  # NUD_PERMANENT
    with IPRoute() as ipr:
        ipr.route("replace", dst=f"{ip}/32", oif=host_idx, scope=253)
    return {"host_if": host_if, "host_mac": host_mac, "pod_mac": pod_mac}


def _unwire(container_id: str) -> bool:
    """Delete the host side of the pod's veth (the pair and the /32 route go with it)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=host_ifname(container_id))
        for idx in found:
            ipr.link("del", index=idx)
    return bool(found)


# ---------------------------------------------------------------------------------------------- commands

def _result(req: Request, ip: IPv4Address, wired: dict[str, Any]) -> dict[str, Any]:
    ipcfg: dict[str, Any] = {"address": f"{ip}/32", "gateway": GATEWAY, "interface": 1}
    if _version_tuple(req.version) < (1, 0, 0):
        ipcfg["version"] = "4"
    return {
        "cniVersion": req.version,
        "interfaces": [{"name": wired["host_if"], "mac": wired["host_mac"]},
                       {"name": req.ifname, "mac": wired["pod_mac"], "sandbox": req.netns}],
        "ips": [ipcfg],
        "routes": [{"dst": "0.0.0.0/0", "gw": GATEWAY}],
        "dns": {},
    }


def _ipam_errors():
    from bgpnet.errors import BgpnetError, DatastoreError, ValidationError
    from bgpnet.ipam.block import NoAddressAvailable, NoPool

    return BgpnetError, DatastoreError, ValidationError, (NoAddressAvailable, NoPool)


def cmd_add(req: Request) -> dict[str, Any]:
    from bgpnet.datastore.base import NODE, POD
    from bgpnet.ipam import store as ipam

    if not os.path.exists(req.netns):
        raise CniError(ERR_NO_CONTAINER, f"network namespace {req.netns} does not exist")
    BgpnetError, DatastoreError, ValidationError, exhausted = _ipam_errors()
    store = req.open_store()
    try:
        ip = ipam.auto_assign(store, req.node, req.handle, req.pod, mode=req.mode,
                              strict_affinity=bool(req.ipam.get("strict_affinity", False)), pool_names=req.pools,
                              attrs={"container_id": req.container_id, "ifname": req.ifname})
    except exhausted as e:
        raise CniError(ERR_NO_ADDRESS, str(e)) from None
    except ValidationError as e:
        raise CniError(ERR_CONFIG, str(e)) from None
    except DatastoreError as e:
        raise CniError(ERR_TRY_AGAIN, f"datastore: {e}") from None
    if req.mtu is None:
        node = store.get(NODE, req.node)
        published = (node.spec.get("pod_mtu") if node else None) or DEFAULT_MTU
        req.mtu = published if isinstance(published, int) and 576 <= published <= 65535 else DEFAULT_MTU
    try:
        wired = _wire(req, ip)
        if req.pod:
            store.put(POD, req.pod, {
                "node": req.node, "ip": str(ip), "labels": req.labels, "ports": req.ports,
                "netns": os.path.basename(req.netns) if os.path.dirname(req.netns) in ("/run/netns", "/var/run/netns")
                else req.netns,
                "netns_path": req.netns, "interface": wired["host_if"], "container_id": req.container_id,
            })
    except BaseException as e:
        # leave nothing behind: the runtime may not call DEL after a failed ADD
        try:
            _unwire(req.container_id)
        finally:
            ipam.release_handle(store, req.handle)
        if isinstance(e, CniError):
            raise
        if isinstance(e, BgpnetError):
            raise CniError(ERR_TRY_AGAIN, f"datastore: {e}") from None
        if isinstance(e, OSError | KeyError | IndexError) or type(e).__module__.startswith("pyroute2"):
            raise CniError(ERR_IO, f"wiring the pod's interface failed: {e}") from None
        raise
    log.info("ADD %s pod %s: %s on %s", req.container_id, req.pod, ip, req.node)
    return _result(req, ip, wired)


def cmd_del(req: Request) -> None:
    from bgpnet.datastore.base import POD
    from bgpnet.errors import DatastoreError, NotFound
    from bgpnet.ipam import store as ipam

    _unwire(req.container_id)
    store = req.open_store()
    try:
        ipam.release_handle(store, req.handle)
        if req.pod:
            cur = store.get(POD, req.pod)
            if cur is not None and cur.spec.get("container_id") in (req.container_id, None):
                try:
                    store.delete(POD, req.pod, cur.revision)
                except NotFound:
                    pass
    except DatastoreError as e:
        raise CniError(ERR_TRY_AGAIN, f"datastore: {e}") from None


def cmd_check(req: Request) -> None:
    from pyroute2 import IPRoute

    from bgpnet.datastore.base import IPAM_HANDLE

    prev = req.conf.get("prevResult")
    if not isinstance(prev, dict) or not prev.get("ips"):
        raise CniError(ERR_CONFIG, "CHECK needs prevResult with ips in the network config")
    want = IPv4Network(prev["ips"][0]["address"], strict=False).network_address
    if not os.path.exists(req.netns):
        raise CniError(ERR_NO_CONTAINER, f"network namespace {req.netns} does not exist")
    handle = req.open_store().get(IPAM_HANDLE, req.handle)
    if handle is None or handle.spec.get("ip") != str(want):
        raise CniError(ERR_CHECK, f"IPAM holds {handle.spec.get('ip') if handle else 'no address'} for "
                       f"{req.handle}, prevResult says {want}")
    host_if = host_ifname(req.container_id)
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=host_if)
        if not idx:
            raise CniError(ERR_CHECK, f"host interface {host_if} is missing")
        routes = ipr.get_routes(dst=str(want), dst_len=32, oif=idx[0])
        if not routes:
            raise CniError(ERR_CHECK, f"host route {want}/32 dev {host_if} is missing")
    with IPRoute(netns=req.netns, flags=0) as pod:
        idx = pod.link_lookup(ifname=req.ifname)
        if not idx:
            raise CniError(ERR_CHECK, f"{req.ifname} is missing in {req.netns}")
        addrs = {a.get_attr("IFA_ADDRESS") for a in pod.get_addr(index=idx[0], family=socket.AF_INET)}
        if str(want) not in addrs:
            raise CniError(ERR_CHECK, f"{req.ifname} in {req.netns} has {sorted(addrs)}, not {want}")
        if not any(r.get_attr("RTA_GATEWAY") == GATEWAY for r in pod.get_default_routes(family=socket.AF_INET)):
            raise CniError(ERR_CHECK, f"default route via {GATEWAY} is missing in {req.netns}")


def run(env: dict[str, str], stdin: str) -> tuple[int, str]:
    """One invocation: returns (exit status, stdout text). Never raises for plugin errors."""
    version = CNI_VERSION
    try:
        req = Request(env, stdin)
        version = req.version
        if req.command == "VERSION":
            return 0, json.dumps({"cniVersion": CNI_VERSION, "supportedVersions": SUPPORTED_VERSIONS})
        if req.command == "ADD":
            return 0, json.dumps(cmd_add(req))
        if req.command == "DEL":
            cmd_del(req)
        else:
            cmd_check(req)
        return 0, ""
    except CniError as e:
        log.warning("%s failed: code %d: %s", env.get("CNI_COMMAND"), e.code, e.msg)
        return 1, json.dumps(e.to_json(version))
    except Exception as e:  # noqa: BLE001 - the runtime must always get the spec's error JSON
        log.exception("unexpected failure")
        return 1, json.dumps(CniError(ERR_IO, f"internal error: {type(e).__name__}: {e}").to_json(version))


def main_entry() -> None:
    logging.basicConfig(level=os.environ.get("BGPNET_CNI_LOG", "WARNING").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s bgpnet-cni: %(message)s")
    cmd = os.environ.get("CNI_COMMAND", "")
    stdin = "" if cmd == "VERSION" and sys.stdin.isatty() else sys.stdin.read()
    status, out = run(dict(os.environ), stdin)
    if out:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
    sys.exit(status)


if __name__ == "__main__":
    main_entry()
