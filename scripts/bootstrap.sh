#!/usr/bin/env bash
# Install what bgpnet's demo and tests need, idempotently: Debian packages, then the virtualenv.
# Usage: scripts/bootstrap.sh [--vm]   (--vm adds the kernel/qemu packages for the IPIP VM tier)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(bird2 frr iptables ipset iproute2 procps psmisc tcpdump conntrack kmod)
VM_PKGS=(qemu-system-x86 linux-image-amd64 busybox-static)
want=("${APT_PKGS[@]}")
[[ "${1:-}" == "--vm" ]] && want+=("${VM_PKGS[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# FRR's and BIRD's packaged services must not run in the root namespace: the lab starts its own.
for svc in frr bird; do
  systemctl stop "$svc" >/dev/null 2>&1 || true
done
pkill -x bird >/dev/null 2>&1 || true

PY=${PYTHON:-python3}
stamp=.venv/.bootstrap-$(sha1sum pyproject.toml | cut -c1-12)
if [[ ! -f "$stamp" ]]; then
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test]'
  [[ "${1:-}" == "--vm" ]] && .venv/bin/pip install -q virtme-ng
  rm -f .venv/.bootstrap-*
  touch "$stamp"
fi
if [[ "${1:-}" == "--vm" ]] && [[ ! -x .venv/bin/vng ]]; then
  .venv/bin/pip install -q virtme-ng
fi
