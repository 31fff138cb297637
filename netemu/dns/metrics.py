"""Counters for the ``/metrics`` endpoint, named and labelled as CoreDNS's prometheus plugin
names them, so dashboards and ``curl :9153/metrics | grep coredns_dns`` work the same.

The hot path only increments a list cell it got once per cached answer: no lock, no lookup.
"""
from __future__ import annotations

import threading
from typing import NamedTuple

# query types CoreDNS labels by name; the rest are "other"
_MONITORED_TYPES = frozenset({"A", "AAAA", "MX", "SOA", "CNAME", "PTR", "TXT", "NS", "SRV", "DS", "DNSKEY",
                              "RRSIG", "NSEC", "NSEC3", "HTTPS", "IXFR", "AXFR", "ANY"})


class CellKey(NamedTuple):
    proto: str   # udp | tcp
    family: str  # 1: IPv4, 2: IPv6
    qtype: str
    rcode: str
    plugin: str  # who wrote the reply: kubernetes, or '' for the server's own errors


# a cell is [requests, cache misses]
Cell = list


def type_label(qtype_name: str) -> str:
    return qtype_name if qtype_name in _MONITORED_TYPES else "other"


class Metrics:
    def __init__(self, server: str):
        self.server = server
        self._cells: dict[CellKey, Cell] = {}
        self._lock = threading.Lock()
        self.zone_swaps = 0

    def cell(self, key: CellKey) -> Cell:
        cell = self._cells.get(key)
        if cell is None:
            with self._lock:
                cell = self._cells.setdefault(key, [0, 0])
        return cell

    def render(self, *, zone_serial: int = 0, ready: bool = False) -> str:
        with self._lock:
            cells = [(k, list(v)) for k, v in self._cells.items()]
        requests: dict[tuple, int] = {}
        responses: dict[tuple, int] = {}
        hits: dict[str, int] = {}
        misses: dict[str, int] = {}
        for key, (count, missed) in cells:
            rk = (key.proto, key.family, key.qtype)
            requests[rk] = requests.get(rk, 0) + count
            sk = (key.rcode, key.plugin)
            responses[sk] = responses.get(sk, 0) + count
            hits[key.proto] = hits.get(key.proto, 0) + count - missed
            misses[key.proto] = misses.get(key.proto, 0) + missed
        base = f'server="{self.server}",zone=".",view=""'
        lines = [
            "# HELP coredns_dns_requests_total Counter of DNS requests made per zone, protocol and family.",
            "# TYPE coredns_dns_requests_total counter",
        ]
        lines += [f'coredns_dns_requests_total{{{base},proto="{p}",family="{f}",type="{t}"}} {n}'
                  for (p, f, t), n in sorted(requests.items())]
        lines += [
            "# HELP coredns_dns_responses_total Counter of response status codes.",
            "# TYPE coredns_dns_responses_total counter",
        ]
        lines += [f'coredns_dns_responses_total{{{base},rcode="{r}",plugin="{pl}"}} {n}'
                  for (r, pl), n in sorted(responses.items())]
        lines += [
            "# HELP netemu_dns_answer_cache_hits_total Replies served from the encoded-answer cache.",
            "# TYPE netemu_dns_answer_cache_hits_total counter",
        ]
        lines += [f'netemu_dns_answer_cache_hits_total{{server="{self.server}",proto="{p}"}} {n}'
                  for p, n in sorted(hits.items())]
        lines += [
            "# HELP netemu_dns_answer_cache_misses_total Replies computed from the zone.",
            "# TYPE netemu_dns_answer_cache_misses_total counter",
        ]
        lines += [f'netemu_dns_answer_cache_misses_total{{server="{self.server}",proto="{p}"}} {n}'
                  for p, n in sorted(misses.items())]
        lines += [
            "# HELP netemu_dns_zone_swaps_total Cluster views swapped in since start.",
            "# TYPE netemu_dns_zone_swaps_total counter",
            f'netemu_dns_zone_swaps_total{{server="{self.server}"}} {self.zone_swaps}',
            "# HELP netemu_dns_zone_serial SOA serial of the cluster view being served.",
            "# TYPE netemu_dns_zone_serial gauge",
            f'netemu_dns_zone_serial{{server="{self.server}"}} {zone_serial}',
            "# HELP coredns_plugin_enabled A metric that indicates whether a plugin is enabled"
            " on per server and zone basis.",
            "# TYPE coredns_plugin_enabled gauge",
            f'coredns_plugin_enabled{{{base},name="kubernetes"}} 1',
            f'coredns_plugin_enabled{{{base},name="loadbalance"}} 1',
            "# HELP netemu_dns_ready Whether a cluster view has been received.",
            "# TYPE netemu_dns_ready gauge",
            f'netemu_dns_ready{{server="{self.server}"}} {1 if ready else 0}',
        ]
        return "\n".join(lines) + "\n"
