"""kube-proxy: one package per mode, each rendering a node's view and applying it.

- view: Services and EndpointSlices -> NodeProxyView (what kube-proxy considers, filtered as it
  does); topology (which endpoints a node uses), addresses (kube-proxy's sloppy IP parsing) and
  conntrack (stale UDP entries after a change) serve every mode
- iptables/, nftables/, ipvs/: render (pure: view -> ruleset, byte-identical to kube-proxy's),
  sync (successive full and partial syncs of one node), apply (the node's backend: runs a sync's
  commands), trace (iptables, nftables: follow a packet through a rendered ruleset)
- runner: the kernel tools (iptables-restore, nft, ipset, ipvsadm, conntrack...) run in a node's
  namespace, behind one interface that unit tests fake
- kubeproxy: KubeProxy, every node's backend of the lab's mode, driven by the control process
- trace: `netemu trace` for every mode (the control process's `trace` op): the mode's tracer over
  the node's rules, and the node's conntrack entries
"""
