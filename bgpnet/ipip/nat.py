"""Outgoing NAT per pool (`nat_outgoing`): MASQUERADE pod traffic leaving the pools, via ipsets + one chain.

Like Calico's cali-nat-outgoing: source in a NAT pool and destination in no pool at all -> MASQUERADE.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network

log = logging.getLogger(__name__)

CHAIN = "BGPNET-NAT-OUTGOING"
SET_NAT = "bgpnet-nat-pools"  # pools with nat_outgoing
SET_ALL = "bgpnet-all-pools"  # every pool: traffic between pools is never NATed
JUMP_COMMENT = "bgpnet:nat-outgoing"


@dataclass(frozen=True)
class NatPlan:
    nat_pools: frozenset[IPv4Network]
    all_pools: frozenset[IPv4Network]

    @property
    def enabled(self) -> bool:
        return bool(self.nat_pools)


def plan_nat(pools: Iterable[tuple[IPv4Network, bool]]) -> NatPlan:
    """From (pool cidr, nat_outgoing) pairs."""
    pools = list(pools)
    return NatPlan(frozenset(c for c, nat in pools if nat), frozenset(c for c, _ in pools))


def render_ipsets(plan: NatPlan) -> str:
    """`ipset restore` input: fill temporary sets and swap them in, so members change atomically."""
    lines = []
    for name, members in ((SET_NAT, plan.nat_pools), (SET_ALL, plan.all_pools)):
        tmp = f"{name}-tmp"
        lines += [f"create {name} hash:net family inet -exist", f"create {tmp} hash:net family inet -exist"]
        lines += [f"flush {tmp}"] + [f"add {tmp} {m}" for m in sorted(members)]
        lines += [f"swap {name} {tmp}", f"destroy {tmp}"]
    return "\n".join(lines) + "\n"


def render_rules(plan: NatPlan, jump_present: bool) -> str:
    """`iptables-restore --noflush` input for the nat table (declaring our chain flushes just that chain)."""
    lines = ["*nat", f":{CHAIN} - [0:0]"]
    if plan.enabled:
        lines.append(
            f"-A {CHAIN} -m set --match-set {SET_NAT} src -m set ! --match-set {SET_ALL} dst -j MASQUERADE"
        )
        if not jump_present:
            lines.append(f'-I POSTROUTING 1 -m comment --comment "{JUMP_COMMENT}" -j {CHAIN}')
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


class NatDriver:
    """Applies a NatPlan with ipset + iptables-restore --noflush in the current namespace (or `netns`)."""

    def __init__(self, netns: str | None = None, iptables: str = "iptables"):
        self.netns = netns
        self.iptables = iptables

    def _run(self, *cmd: str, input: str | None = None, check: bool = True) -> str:
        argv = list(cmd) if self.netns is None else ["ip", "netns", "exec", self.netns, *cmd]
        p = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=30)
        if check and p.returncode != 0:
            if input is not None:
                log.error("%s failed; input was:\n%s", cmd[0], input)
            raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip() or p.stdout.strip()}")
        return p.stdout

    def _jump_present(self) -> bool:
        saved = self._run(f"{self.iptables}-save", "-t", "nat")
        return any(JUMP_COMMENT in line and line.startswith("-A POSTROUTING") for line in saved.splitlines())

    def apply(self, plan: NatPlan) -> None:
        if plan.enabled:
            self._run("ipset", "restore", input=render_ipsets(plan))
            self._run(f"{self.iptables}-restore", "--noflush", input=render_rules(plan, self._jump_present()))
            return
        # Nothing to NAT: remove the jump, the chain and the sets, if a previous config left them.
        if self._jump_present():
            self._run(self.iptables, "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", JUMP_COMMENT,
                      "-j", CHAIN)  # fmt: skip
        self._run(self.iptables, "-t", "nat", "-F", CHAIN, check=False)
        self._run(self.iptables, "-t", "nat", "-X", CHAIN, check=False)
        for name in (SET_NAT, SET_ALL):
            self._run("ipset", "destroy", name, check=False)
