"""kube-proxy's IPVS mode: render (view -> virtual servers, ipsets, kube-ipvs0 addresses, iptables),
sync (the difference to what the node has, as commands), apply (runs them in the node), kernel (can
this kernel do IPVS at all)."""
