"""Cluster DNS: a CoreDNS-compatible resolver for the lab's ``cluster.local`` zone.

    zone = ClusterZone.build(services, slices, pods, namespaces=..., dns_server_ips=[pod_ip])
    feed = ZoneFeed(zone)
    server = serve(pod_ip, feed)                        # UDP+TCP 53, :9153 /metrics, :8080, :8181
    feed.publish(ClusterZone.build(..., previous=zone))  # on every change, from any thread

Modules, from data to bytes: ``zone`` (the indexed cluster view), ``lookup`` (what a name
stands for), ``answer`` and ``envelope`` (the reply CoreDNS's kubernetes plugin would give),
``wire`` and ``loadbalance`` (encoding, truncation, rotations), ``feed`` and ``server`` (the
running resolver), ``metrics`` and ``httpd`` (its HTTP endpoints), ``names`` (Go-compatible
address parsing).
"""
from netemu.dns.answer import answer
from netemu.dns.feed import ZoneFeed, ZoneSource
from netemu.dns.server import DNSServer, serve
from netemu.dns.zone import ClusterZone

__all__ = ["ClusterZone", "DNSServer", "ZoneFeed", "ZoneSource", "answer", "serve"]
