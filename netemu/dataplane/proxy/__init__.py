"""kube-proxy, rendered without a kernel: the node's proxy view and its iptables mode.

- view: Services and EndpointSlices -> NodeProxyView (what kube-proxy considers, filtered as it does)
- iptables: render(view) -> IptablesRuleset, whose payload() is kube-proxy's iptables-restore input;
  base_jump_rules() for the jumps kube-proxy keeps in built-in chains
- iptables_sync: IptablesSyncer, successive full and partial payloads for one node
- conntrack: stale UDP conntrack entries to delete after a change
- trace: follow a packet through a rendered ruleset (debugging)

Applying payloads (iptables-restore in the node's namespace) lives elsewhere; this package is pure.
"""
from netemu.dataplane.proxy.conntrack import ConntrackDeletion, UdpFlow, stale_udp_conntrack, udp_flows_to_clear
from netemu.dataplane.proxy.iptables import (
    IptablesRenderer,
    IptablesRuleset,
    JumpRule,
    base_jump_rules,
    canary_chains,
    render,
)
from netemu.dataplane.proxy.iptables_sync import IptablesSyncer, SyncResult
from netemu.dataplane.proxy.trace import Trace, trace_packet
from netemu.dataplane.proxy.view import (
    KUBE_PROXY_TEST_OPTIONS,
    EndpointView,
    NodeProxyView,
    ProxyOptions,
    ServicePortView,
    build_view,
    endpoints_map,
    refresh_view,
    service_ports,
)

__all__ = [
    "ConntrackDeletion", "UdpFlow", "stale_udp_conntrack", "udp_flows_to_clear",
    "IptablesRenderer", "IptablesRuleset", "JumpRule", "base_jump_rules", "canary_chains", "render",
    "IptablesSyncer", "SyncResult", "Trace", "trace_packet",
    "KUBE_PROXY_TEST_OPTIONS", "EndpointView", "NodeProxyView", "ProxyOptions", "ServicePortView",
    "build_view", "endpoints_map", "refresh_view", "service_ports",
]
