"""NetworkPolicy enforcement: pure renderer (rules), iptables/ipset driver, PolicyAgent seam."""

from bgpnet.felix.sync import PolicyAgent

__all__ = ["PolicyAgent"]
