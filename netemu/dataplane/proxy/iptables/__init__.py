"""kube-proxy's iptables mode: render (view -> iptables-restore payload; port: one service port's
rules; chains: names), sync (full, then partial payloads), apply (iptables-restore in the node),
trace (a packet through a rendered ruleset)."""
