# The bgpnet node image: the agent (with ExaBGP), the CNI plugin, iproute2/iptables/ipset.
# Used by real containerlab (`image: bgpnet:dev`) and by the Kubernetes DaemonSet
# (conf/kubernetes/bgpnet.yaml). Build from the repository root:
#   docker build -f containerlab/bgpnet.Dockerfile -t bgpnet:dev .
# Not built in this project's CI: no container engine runs on our machines (see README).
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 iptables ipset conntrack procps \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bgpnet ./bgpnet
RUN pip install --no-cache-dir . \
 # The CNI plugin runs on the host (kubelet execs it), so ship it as one zipapp with its pure-Python
 # dependencies; the host needs python3 >= 3.11 only.
 && pip install --no-cache-dir --no-deps --target /build/cni . pyroute2 netaddr tenacity PyYAML \
 && mkdir -p /opt/bgpnet \
 && python -m zipapp /build/cni -m "bgpnet.cni.plugin:main_entry" -p "/usr/bin/env python3" \
      -o /opt/bgpnet/bgpnet-cni.pyz \
 && rm -rf /build /src

WORKDIR /
ENTRYPOINT ["bgpnet"]
CMD ["agent", "--config", "/etc/bgpnet/config.yaml"]
