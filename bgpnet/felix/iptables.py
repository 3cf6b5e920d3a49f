"""The iptables/ipset driver: diff a rendered Ruleset against the kernel and write only what differs.

One `iptables-restore --noflush` per apply for the filter table; ipsets through `ipset restore`
(new sets created, changed ones filled under a temporary name and swapped in, unused ones destroyed
after iptables stopped referencing them — Calico's order). Only chains and sets named BGPNET-* and
rules carrying our hash comment are ever read as ours or written.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bgpnet.errors import BgpnetError
from bgpnet.felix.rules import HASH_COMMENT, PREFIX, Hook, IPSet, Ruleset

log = logging.getLogger(__name__)

_HASH_RE = re.compile(r'--comment "?' + re.escape(HASH_COMMENT) + r'([A-Za-z0-9_-]+)"?')
_BUILTIN = ("INPUT", "FORWARD", "OUTPUT")


class DataplaneError(BgpnetError):
    """iptables-restore or ipset restore failed; the message carries the input that failed."""


Runner = Callable[[Sequence[str], str | None], str]


def run(cmd: Sequence[str], input: str | None = None) -> str:
    p = subprocess.run(list(cmd), input=input, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise DataplaneError(f"{' '.join(cmd)} failed (exit {p.returncode}): {p.stderr.strip()}")
    return p.stdout


@dataclass
class KernelState:
    """What we own in the kernel: our chains' rule hashes, our rules in built-in chains, our ipsets."""

    chains: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    # built-in chain -> [(position, hash, saved rule text)] of rules with our hash comment
    hooks: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)
    sets: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)


def parse_iptables_save(text: str) -> KernelState:
    st = KernelState()
    chains: dict[str, list[str | None]] = {}
    positions: dict[str, int] = {}
    in_filter = False
    for line in text.splitlines():
        if line.startswith("*"):
            in_filter = line == "*filter"
            continue
        if not in_filter:
            continue
        if line.startswith(":"):
            name = line[1:].split(" ", 1)[0]
            if name.startswith(PREFIX):
                chains[name] = []
        elif line.startswith("-A "):
            name = line[3:].split(" ", 1)[0]
            m = _HASH_RE.search(line)
            if name in chains:
                chains[name].append(m.group(1) if m else None)  # a foreign rule makes the chain differ
            else:
                positions[name] = positions.get(name, 0) + 1
                if m:
                    st.hooks.setdefault(name, []).append((positions[name], m.group(1), line[3:]))
    st.chains = {k: tuple(v) for k, v in chains.items()}
    return st


def parse_ipset_save(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    types: dict[str, str] = {}
    members: dict[str, set[str]] = {}
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) < 3 or not parts[1].startswith(PREFIX):
            continue
        if parts[0] == "create":
            types[parts[1]] = parts[2].split(" ", 1)[0]
            members.setdefault(parts[1], set())
        elif parts[0] == "add":
            members.setdefault(parts[1], set()).add(parts[2].strip())
    return {n: (types.get(n, ""), frozenset(members.get(n, ()))) for n in types}


@dataclass
class ApplyResult:
    chains_written: int = 0
    chains_deleted: int = 0
    hooks_written: int = 0
    sets_written: int = 0
    sets_deleted: int = 0
    read_kernel: bool = False
    seconds: float = 0.0
    iptables_input: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.chains_written or self.chains_deleted or self.hooks_written or self.sets_written
                    or self.sets_deleted)

    def __str__(self) -> str:
        return (f"chains {self.chains_written} written / {self.chains_deleted} deleted, hooks "
                f"{self.hooks_written}, ipsets {self.sets_written} written / {self.sets_deleted} deleted"
                f"{' (kernel re-read)' if self.read_kernel else ''}, {self.seconds * 1000:.1f} ms")


def _temp_name(name: str) -> str:
    return PREFIX + "T" + name[len(PREFIX):]


class IptablesDriver:
    """Keeps the kernel equal to the last Ruleset given to `apply`.

    Between full reads it trusts a cache of what it wrote (so a change costs one small restore);
    `apply(refresh=True)` re-reads iptables-save and ipset save and repairs whatever others changed.
    """

    def __init__(self, runner: Runner | None = None, iptables: str = "iptables"):
        self._run = runner or run
        self.save_cmd = [f"{iptables}-save", "-t", "filter"]
        self.restore_cmd = [f"{iptables}-restore", "--noflush", "--wait"]
        self._state: KernelState | None = None
        self._destroyed: set[str] = set()
        self.last_result: ApplyResult | None = None

    def read(self) -> KernelState:
        st = parse_iptables_save(self._run(self.save_cmd, None))
        st.sets = parse_ipset_save(self._run(["ipset", "save"], None))
        return st

    def invalidate(self) -> None:
        self._state = None

    # -- ipsets
    def _ipset_script(self, want: dict[str, IPSet], have: dict[str, tuple[str, frozenset[str]]],
                      swap_all: bool = False) -> tuple[list[str], int]:
        lines: list[str] = []
        written = 0
        for name, s in want.items():
            cur = have.get(name)
            if cur is not None and cur == (s.type, s.members):
                continue
            written += 1
            if cur is not None and cur[0] == s.type and not swap_all:
                # Adds before deletes: each member goes from its old to its new state once, so no
                # moment allows an address that neither the old nor the new policy allows. Our sets
                # are only ever matched positively, so this holds for every rule using them.
                lines.extend(f"add {name} {m}" for m in sorted(s.members - cur[1]))
                lines.extend(f"del {name} {m}" for m in sorted(cur[1] - s.members))
                continue
            target = name if cur is None else _temp_name(name)
            if target != name and target in have:
                lines.append(f"destroy {target}")  # a leftover from an interrupted swap
                self._destroyed.add(target)
            lines.append(f"create {target} {s.type} family inet hashsize 1024 "
                         f"maxelem {max(65536, 2 * len(s.members))}")
            lines.extend(f"add {target} {m}" for m in sorted(s.members))
            if target != name:
                # a whole new content (drift repair, or a type change) replaces the old atomically
                lines.append(f"swap {target} {name}")
                lines.append(f"destroy {target}")
        return lines, written

    def _ipset_restore(self, lines: list[str]) -> None:
        if not lines:
            return
        text = "\n".join(lines) + "\n"
        try:
            self._run(["ipset", "restore"], text)
        except DataplaneError as e:
            log.error("ipset restore failed; input was:\n%s", text)
            raise DataplaneError(f"{e}\n--- ipset restore input ---\n{text[:4000]}") from None

    # -- iptables
    def _iptables_input(self, rs: Ruleset, st: KernelState) -> tuple[str, int, int, int]:
        want = {c.name: c for c in rs.chains}
        changed = [c for c in rs.chains if st.chains.get(c.name) != c.hashes]
        stale = sorted(n for n in st.chains if n not in want)
        hook_lines: list[str] = []
        hooks_written = 0
        by_chain: dict[str, list[Hook]] = {}
        for h in rs.hooks:
            by_chain.setdefault(h.chain, []).append(h)
        for chain in sorted(set(by_chain) | set(st.hooks)):
            wanted = by_chain.get(chain, [])
            have = st.hooks.get(chain, [])
            ok = [(pos, hsh) for pos, hsh, _ in have] == [(i + 1, h.hash) for i, h in enumerate(wanted)]
            if ok:
                continue
            hooks_written += 1
            # Remove every rule of ours in this chain (as iptables-save spelled it), then insert the
            # wanted ones at the top; rules of other programs stay where they are.
            hook_lines += [f"-D {text}" for _, _, text in have]
            hook_lines += [h.line(verb="-I").replace(f"-I {chain} ", f"-I {chain} {i + 1} ", 1)
                           for i, h in enumerate(wanted)]
        if not changed and not stale and not hook_lines:
            return "", 0, 0, 0
        out = ["*filter"]
        out += [f":{c.name} - [0:0]" for c in changed]  # declares new chains, flushes existing ones
        out += [f":{n} - [0:0]" for n in stale]
        for c in changed:
            out += c.lines()
        out += hook_lines
        out += [f"-X {n}" for n in stale]
        out.append("COMMIT")
        return "\n".join(out) + "\n", len(changed), len(stale), hooks_written

    def apply(self, rs: Ruleset, refresh: bool = False) -> ApplyResult:
        t0 = time.monotonic()
        res = ApplyResult()
        if refresh or self._state is None:
            self._state = self.read()
            res.read_kernel = True
        st = self._state
        want_sets = {s.name: s for s in rs.ipsets}
        try:
            # 1. sets the new rules reference must exist first
            self._destroyed = set()
            lines, res.sets_written = self._ipset_script(want_sets, st.sets, swap_all=res.read_kernel)
            self._ipset_restore(lines)
            for s in want_sets.values():
                st.sets[s.name] = (s.type, s.members)
            for n in self._destroyed:
                st.sets.pop(n, None)
            # 2. one atomic iptables transaction
            text, res.chains_written, res.chains_deleted, res.hooks_written = self._iptables_input(rs, st)
            if text:
                res.iptables_input = text
                try:
                    self._run(self.restore_cmd, text)
                except DataplaneError as e:
                    log.error("iptables-restore failed; input was:\n%s", text)
                    raise DataplaneError(f"{e}\n--- iptables-restore input ---\n{text[:4000]}") from None
                st.chains = {c.name: c.hashes for c in rs.chains}
                st.hooks = {}
                for h in rs.hooks:
                    st.hooks.setdefault(h.chain, []).append(
                        (len(st.hooks.get(h.chain, [])) + 1, h.hash, h.line()[3:]))
            # 3. only now drop sets nothing references any more
            stale = sorted(n for n in st.sets if n not in want_sets)
            if stale:
                self._ipset_restore([f"destroy {n}" for n in stale])
                for n in stale:
                    st.sets.pop(n, None)
                res.sets_deleted = len(stale)
        except Exception:
            self._state = None  # unsure what the kernel holds now: re-read next time
            raise
        res.seconds = time.monotonic() - t0
        self.last_result = res
        return res

    def cleanup(self) -> ApplyResult:
        """Remove everything we own: our hook rules, BGPNET-* chains, BGPNET-* ipsets."""
        return self.apply(Ruleset((), (), ()), refresh=True)
