"""Boot helper for the kernel tier: run a Python script inside a virtme-ng VM with Debian's stock kernel.

The guest sees the host filesystem read-only (so this checkout and its venv work as they are) and can write
only to a scratch directory passed with --rwdir. Software emulation unless BGPNET_VM_KVM=1 (~45 s boot).
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class VmResult:
    returncode: int
    output: str  # guest stdout + stderr
    scratch: Path  # the guest's writable directory, for result files
    seconds: float


def find_vng() -> str | None:
    venv_bin = Path(sys.executable).parent
    for cand in (venv_bin / "vng", shutil.which("vng")):
        if cand and os.access(cand, os.X_OK):
            return str(cand)
    return None


def find_kernel() -> str | None:
    """Debian's stock kernel (linux-image-amd64), newest first; it has ipip as a module."""
    kernels = sorted(glob.glob("/boot/vmlinuz-*-amd64"))
    return kernels[-1] if kernels else None


def missing() -> str | None:
    """Why the VM tier cannot run here, or None. `scripts/bootstrap.sh --vm` installs what it needs."""
    if find_vng() is None:
        return "virtme-ng (vng) not installed: run scripts/bootstrap.sh --vm"
    if find_kernel() is None:
        return "no /boot/vmlinuz-*-amd64: apt-get install linux-image-amd64 (scripts/bootstrap.sh --vm)"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 not installed (scripts/bootstrap.sh --vm)"
    return None


def use_kvm() -> bool:
    """Opt-in (BGPNET_VM_KVM=1): on these machines /dev/kvm opens but qemu aborts setting MSRs under it."""
    return os.environ.get("BGPNET_VM_KVM") == "1"


def run_in_vm(
    script: str | Path, *args: str, timeout: float = 900, memory: str = "2G", cpus: int = 2
) -> VmResult:
    """Boot a VM, run `python script args...` in it (cwd and PYTHONPATH = this checkout), power off.

    The script finds its scratch directory in the BGPNET_SCRATCH environment variable."""
    why = missing()
    if why:
        raise RuntimeError(why)
    vng, kernel = find_vng(), find_kernel()
    scratch = Path(tempfile.mkdtemp(prefix="bgpnet-vm-"))
    inner = (
        f"cd {shlex.quote(str(ROOT))} && export PYTHONPATH={shlex.quote(str(ROOT))} PYTHONDONTWRITEBYTECODE=1 "
        f"BGPNET_SCRATCH={shlex.quote(str(scratch))} && exec {shlex.quote(sys.executable)} "
        + " ".join(shlex.quote(str(a)) for a in (script, *args))
    )
    argv = [vng, "--cpus", str(cpus), "-m", memory, "-r", kernel, "--user", "root", "--rwdir", str(scratch)]
    if not use_kvm():
        argv.insert(1, "--disable-kvm")
    argv += ["--", "bash", "-c", inner]
    env = dict(os.environ, PATH=f"{Path(vng).parent}:{os.environ.get('PATH', '')}")  # vng runs virtme-run
    t = time.monotonic()
    p = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env
    )
    return VmResult(p.returncode, p.stdout + p.stderr, scratch, time.monotonic() - t)
