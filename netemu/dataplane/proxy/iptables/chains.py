"""kube-proxy's iptables chain names and small formatting rules.

Per-service chains are "KUBE-<kind>-" + the first 16 characters of base32(sha256(text)), where
text is "ns/name:port" + lowercase protocol (+ "ip:port" for endpoint chains), so that names fit
iptables' 28-character limit and stay stable across restarts.
"""
from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

# top-level chains (filter and nat)
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_PROXY_CANARY = "KUBE-PROXY-CANARY"
KUBE_FIREWALL = "KUBE-FIREWALL"  # kubelet's anti-martian chain, duplicated by kube-proxy

# per-service chain prefixes
SVC_PREFIX = "KUBE-SVC-"   # Cluster traffic policy endpoints
SVL_PREFIX = "KUBE-SVL-"   # Local traffic policy endpoints
EXT_PREFIX = "KUBE-EXT-"   # external destinations (NodePort, LB, external IPs)
FW_PREFIX = "KUBE-FW-"     # loadBalancerSourceRanges
SEP_PREFIX = "KUBE-SEP-"   # one endpoint
SERVICE_CHAIN_PREFIXES = (SVC_PREFIX, SVL_PREFIX, EXT_PREFIX, FW_PREFIX, SEP_PREFIX)

# nfacct counters kube-proxy uses for its metrics (pkg/proxy/metrics)
CT_STATE_INVALID_COUNTER = "ct_state_invalid_dropped_pkts"
LOCALHOST_NODEPORTS_COUNTER = "localhost_nps_accepted_pkts"

# more endpoints than this in total: comments are left out of SVC/SEP rules ("large cluster mode")
LARGE_CLUSTER_ENDPOINTS_THRESHOLD = 1000


def _hash16(text: str) -> str:
    # 16 base32 characters are exactly the first 10 bytes of the digest
    return base64.b32encode(hashlib.sha256(text.encode()).digest()[:10]).decode()


@lru_cache(maxsize=None)  # one entry per service port ever seen: small
def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """The 16-character hash shared by a service port's SVC/SVL/EXT/FW chains."""
    return _hash16(service_port_name + protocol.lower())


def service_chain(service_port_name: str, protocol: str) -> str:
    return SVC_PREFIX + port_proto_hash(service_port_name, protocol)


def local_chain(service_port_name: str, protocol: str) -> str:
    return SVL_PREFIX + port_proto_hash(service_port_name, protocol)


@lru_cache(maxsize=131072)
def endpoint_chain(service_port_name: str, protocol: str, endpoint: str) -> str:
    """KUBE-SEP-... for one endpoint ("ip:port") of a service port."""
    return SEP_PREFIX + _hash16(service_port_name + protocol.lower() + endpoint)


def is_service_chain(chain: str) -> bool:
    return chain.startswith(SERVICE_CHAIN_PREFIXES)


@lru_cache(maxsize=4096)
def probability(n: int) -> str:
    """`--probability` for the i-th of n remaining endpoints: 1/n with 10 decimals (Go's %0.10f)."""
    return f"{1.0 / n:.10f}"


def chain_line(chain: str) -> str:
    """The iptables-restore declaration that creates (or flushes) a chain."""
    return f":{chain} - [0:0]"
