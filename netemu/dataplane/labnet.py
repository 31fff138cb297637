"""The lab's wires: the lab segment, node namespaces and pod network namespaces.

    host (root ns) ne-<lab> 192.168.1.1/24 --veth-- [ne-<lab>: br0] --veth-- eth0 [ne-<lab>_<node>]
    node: eth0 <node ip>/24, cni0 bridge <pod subnet .1>, host-gw routes to the other nodes' pod
          subnets, a route for the service CIDR, IP forwarding; no default route
    pod:  eth0 (veth to the node's cni0, hairpin on) <pod ip>/24, default route via cni0's address

The segment's bridge lives in its own namespace so the host's firewall and bridge-netfilter
settings never see lab frames. Only the host's end of one veth is in the root namespace.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
from dataclasses import dataclass
from typing import Iterable, Optional

from netemu import paths
from netemu.dataplane import names, nsutil
from netemu.dataplane.ipcmd import ip_batch, netns_list


@dataclass(frozen=True)
class NodeNet:
    name: str
    ip: str
    pod_cidr: str

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.pod_cidr).hosts()))


@dataclass(frozen=True)
class PodNet:
    namespace: str
    name: str
    node: str
    ip: str
    prefixlen: int
    gateway: str


def _mac(seed: str) -> str:
    """A stable, locally administered MAC (bridges otherwise change MAC as ports come and go)."""
    h = hashlib.sha256(seed.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:5])


@dataclass(frozen=True)
class RouterNet:
    """A lab router (spec.routers): a namespace on the segment with forwarding on, no pods, no default
    route; FRR (netemu.dataplane.frr) runs in it."""

    name: str
    ip: str


class LabNet:
    def __init__(self, lab: str, network: str, gateway: str, service_cidr: str, nodes: list[NodeNet],
                 routers: Optional[list[RouterNet]] = None):
        self.lab = lab
        self.network = ipaddress.ip_network(network)
        self.gateway = gateway
        self.service_cidr = service_cidr
        self.nodes = {n.name: n for n in nodes}
        self.routers = {r.name: r for r in routers or []}
        self.switch = names.switch_netns(lab)
        self.host_link = names.host_link(lab)

    def node_netns(self, node: str) -> str:
        return names.node_netns(self.lab, node)

    # ------------------------------------------------------------------ build
    def create_namespaces(self) -> None:
        ip_batch([f"netns add {self.switch}"] + [f"netns add {self.node_netns(n)}" for n in [*self.nodes, *self.routers]])

    def build(self) -> None:
        """Wire the namespaces made by create_namespaces()."""
        prefix = self.network.prefixlen
        # the host's end first: if the name is taken the lab stops here, before touching more
        ip_batch([
            f"link add {self.host_link} type veth peer name {names.SWITCH_HOST_PORT} netns {self.switch}",
            f"addr add {self.gateway}/{prefix} dev {self.host_link}",
        ])
        _quiet_host_link(self.host_link)
        ip_batch([f"link set {self.host_link} up"])
        sw = [
            "link set lo up",
            f"link add {names.SWITCH_BRIDGE} address {_mac(self.lab + '/br0')} type bridge",
            f"link set {names.SWITCH_BRIDGE} up",
            f"link set {names.SWITCH_HOST_PORT} master {names.SWITCH_BRIDGE} up",
        ]
        for n in [*self.nodes.values(), *self.routers.values()]:
            port = names.switch_port(n.name)
            sw += [f"link add {port} type veth peer name {names.NODE_UPLINK} netns {self.node_netns(n.name)}",
                   f"link set {port} master {names.SWITCH_BRIDGE} up"]
        ip_batch(sw, netns=self.switch)
        nsutil.write_sysctl_in(self.switch, {"net.bridge.bridge-nf-call-iptables": "0",
                                             "net.bridge.bridge-nf-call-ip6tables": "0",
                                             "net.ipv6.conf.all.disable_ipv6": "1"})
        for n in self.nodes.values():
            self._build_node(n, prefix)
        for r in self.routers.values():
            self._build_router(r, prefix)

    def _build_router(self, r: RouterNet, prefix: int) -> None:
        ns = self.node_netns(r.name)
        nsutil.write_sysctl_in(ns, {
            "net.ipv4.ip_forward": "1",
            "net.ipv4.conf.all.rp_filter": "0",
            "net.ipv4.conf.default.rp_filter": "0",
            # it forwards out of the interface it received on (host -> router -> node, one segment):
            # no ICMP redirects, or the host would learn to bypass it and miss every failover
            "net.ipv4.conf.all.send_redirects": "0",
            "net.ipv4.conf.default.send_redirects": "0",
            # ECMP over the nodes by flow (addresses and ports), not by address pair alone
            "net.ipv4.fib_multipath_hash_policy": "1",
            "net.ipv6.conf.all.disable_ipv6": "1",
            "net.ipv6.conf.default.disable_ipv6": "1",
        })
        ip_batch(["link set lo up", f"addr add {r.ip}/{prefix} dev {names.NODE_UPLINK}",
                  f"link set {names.NODE_UPLINK} up"], netns=ns)
        nsutil.write_sysctl_in(ns, {f"net.ipv4.conf.{names.NODE_UPLINK}.send_redirects": "0"})

    def _build_node(self, n: NodeNet, prefix: int) -> None:
        ns = self.node_netns(n.name)
        # forwarding and bridge-netfilter first: pods' traffic must meet kube-proxy's rules
        nsutil.write_sysctl_in(ns, {
            "net.ipv4.ip_forward": "1",
            "net.bridge.bridge-nf-call-iptables": "1",
            "net.ipv4.conf.all.rp_filter": "0",
            "net.ipv4.conf.default.rp_filter": "0",
            "net.ipv6.conf.all.disable_ipv6": "1",
            "net.ipv6.conf.default.disable_ipv6": "1",
            # kube-proxy sets this so that NodePorts answer on 127.0.0.1 too (route_localnet)
            "net.ipv4.conf.all.route_localnet": "1",
            # a namespace's ICMP rate limit can swallow the very first "port unreachable" of a
            # REJECT rule here, turning an instant refusal into a client timeout
            "net.ipv4.icmp_ratelimit": "0",
        })
        cmds = [
            "link set lo up",
            f"addr add {n.ip}/{prefix} dev {names.NODE_UPLINK}",
            f"link set {names.NODE_UPLINK} up",
            f"link add {names.NODE_BRIDGE} address {_mac(self.lab + '/' + n.name + '/cni0')} type bridge",
            f"addr add {n.gateway}/{ipaddress.ip_network(n.pod_cidr).prefixlen} dev {names.NODE_BRIDGE}",
            f"link set {names.NODE_BRIDGE} up",
            f"route add {self.service_cidr} dev {names.NODE_UPLINK} src {n.ip}",
        ]
        for other in self.nodes.values():
            if other.name != n.name:
                cmds.append(f"route add {other.pod_cidr} via {other.ip} dev {names.NODE_UPLINK}")
        ip_batch(cmds, netns=ns)

    # ------------------------------------------------------------------ node failure
    def set_node_link(self, node: str, up: bool) -> None:
        """Cut or restore a node's cable: the switch's port goes down, the node loses carrier."""
        ip_batch([f"link set {names.switch_port(node)} {'up' if up else 'down'}"], netns=self.switch)

    # ------------------------------------------------------------------ pods
    def pod_netns(self, namespace: str, pod: str) -> str:
        return names.pod_netns(self.lab, namespace, pod)

    def add_pods(self, pods: list[PodNet]) -> None:
        """Create pod namespaces and wire them, in as few iproute2 processes as possible.

        On failure, what this call created is removed (and only that: a namespace that already
        existed is never touched) and the error is raised."""
        if not pods:
            return
        wanted = [self.pod_netns(p.namespace, p.name) for p in pods]
        existing = _present_netns()
        taken = [n for n in wanted if n in existing]
        if taken:
            raise FileExistsError(f"network namespace {taken[0]} already exists")
        try:
            self._add_pods(pods)
        except BaseException:
            now = _present_netns()
            self._remove_netns([n for n in wanted if n in now])
            raise

    def _add_pods(self, pods: list[PodNet]) -> None:
        ip_batch([f"netns add {self.pod_netns(p.namespace, p.name)}" for p in pods])
        by_node: dict[str, list[PodNet]] = {}
        for p in pods:
            by_node.setdefault(p.node, []).append(p)
        for node, group in by_node.items():
            cmds = []
            for p in group:
                veth = names.pod_veth(p.namespace, p.name)
                cmds += [
                    # the pod's end is created inside the pod's namespace, as its second link
                    f"link add {veth} type veth peer name {names.POD_IF} netns {self.pod_netns(p.namespace, p.name)}"
                    f" index {POD_IF_INDEX}",
                    f"link set {veth} master {names.NODE_BRIDGE} up",
                    # a pod reaching its own Service may be sent back to itself (hairpin)
                    f"link set dev {veth} type bridge_slave hairpin on",
                ]
            ip_batch(cmds, netns=self.node_netns(node))
        for p in pods:
            configure_pod_interface(self.pod_netns(p.namespace, p.name), p)

    def remove_pods(self, pods: Iterable[tuple[str, str]]) -> None:
        """Deleting a pod's namespace deletes its veth pair with it."""
        self._remove_netns([self.pod_netns(ns, name) for ns, name in pods])

    def discard_files(self, pods: Iterable[tuple[str, str]]) -> None:
        """The /etc/netns files of pods whose namespace was not made (a failed add_pods): only where no
        namespace of that name exists."""
        present = _present_netns()
        for ns, name in pods:
            n = self.pod_netns(ns, name)
            if n not in present:
                shutil.rmtree(paths.netns_etc(n), ignore_errors=True)

    @staticmethod
    def _remove_netns(nss: list[str]) -> None:
        ip_batch([f"netns del {n}" for n in nss], force=True)
        for n in nss:
            shutil.rmtree(paths.netns_etc(n), ignore_errors=True)


def sweep(lab: str, other_labs: Optional[list[str]] = None, legacy: bool = False) -> list[str]:
    """Remove every namespace and link of a lab, found by name (works after a crash too).
    Pods first, then nodes, then the switch; the host link goes with the switch's veth. Then every
    /etc/netns entry of the lab, whether its namespace still exists or not (a crash between writing a
    pod's files and creating its namespace leaves the files alone). legacy: also the names of the
    former scheme (`ne-<lab>-<node>`), for a lab started before it changed."""
    other_labs = other_labs or []

    def mine(n: str) -> bool:
        return names.belongs_to(lab, n) or (legacy and names.legacy_belongs_to(lab, n, other_labs))

    owned = [n for n in netns_list() if mine(n)]
    switch = names.switch_netns(lab)
    ordered = sorted(owned, key=lambda n: (n == switch, n))
    ip_batch([f"netns del {n}" for n in ordered], force=True)
    host = names.host_link(lab)
    # (a hashed name shared with another lab that is up is that lab's: not ours to delete)
    if os.path.exists(f"/sys/class/net/{host}") and not any(names.host_link(o) == host for o in other_labs
                                                           if o != lab):
        ip_batch([f"link del {host}"], force=True)
    try:
        etc = [n for n in os.listdir(paths.ETC_NETNS) if mine(n)]
    except OSError:
        etc = []
    for n in sorted(set(owned) | set(etc)):
        shutil.rmtree(paths.netns_etc(n), ignore_errors=True)
    try:
        os.rmdir(paths.ETC_NETNS)  # only if empty: it may hold other tools' files
    except OSError:
        pass
    return owned


def _present_netns() -> set[str]:
    """The named network namespaces (the files `ip netns add` makes under /run/netns), without a process."""
    try:
        return set(os.listdir(nsutil.NETNS_DIR))
    except FileNotFoundError:
        return set()
    except OSError:
        return set(netns_list())


POD_IF_INDEX = 2  # lo is 1 in a new namespace


def configure_pod_interface(netns: str, p: PodNet) -> None:
    """Address and routes inside a pod, over netlink from this thread entering the pod's
    namespace: no `ip` process per pod (about 2 ms instead of 8 ms a pod here)."""
    from pyroute2 import IPRoute

    with nsutil.in_netns(netns):
        # the lab is IPv4: no link-local addresses, DAD or router solicitations per pod
        for scope in ("all", "default"):
            with open(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6", "w") as f:
                f.write("1")
        with IPRoute() as ipr:
            ipr.link("set", index=1, state="up")
            ipr.addr("add", index=POD_IF_INDEX, address=p.ip, prefixlen=p.prefixlen)
            ipr.link("set", index=POD_IF_INDEX, state="up")
            ipr.route("add", dst="default", gateway=p.gateway, oif=POD_IF_INDEX)


def _quiet_host_link(link: str) -> None:
    """No IPv6 chatter (router solicitations, DAD) from the host onto the lab segment."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass
