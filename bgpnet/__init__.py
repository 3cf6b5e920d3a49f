"""bgpnet: a BGP-routed Kubernetes networking agent (ExaBGP speaker, kernel routes, iptables policy)."""

__version__ = "0.1.0"

# Our routes carry this route protocol number (see `ip route show proto 201`), so the agent finds what it
# owns and never touches anything else. BIRD uses 12, FRR 186/zebra 11, Calico 80.
RTPROT_BGPNET = 201
