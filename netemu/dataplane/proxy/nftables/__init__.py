"""kube-proxy's nftables mode: render (view -> `nft -f` transaction, kube-proxy's form and netemu's
fast form), model (what a transaction leaves behind, as knftables' fake keeps it), sync (full, then
partial transactions), apply (`nft -f` in the node), trace (a packet through a rendered table)."""
