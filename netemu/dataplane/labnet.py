"""The lab's wires: the lab segment, node namespaces and pod network namespaces.

    host (root ns) ne-<lab> 192.168.1.1/24 --veth-- [ne-<lab>: br0] --veth-- eth0 [ne-<lab>_<node>]
    node: eth0 <node ip>/24, cni0 bridge <pod subnet .1>, host-gw routes to the other nodes' pod
          subnets, a route for the service CIDR, IP forwarding; no default route
    pod:  eth0 (veth to the node's cni0, hairpin on) <pod ip>/24, default route via cni0's address

The segment's bridge lives in its own namespace so the host's firewall and bridge-netfilter
settings never see lab frames. Only the host's end of one veth is in the root namespace.

An IPv4-only lab has IPv6 switched off in every namespace and on the host link. A dual-stack lab
(network6) carries IPv6 beside IPv4 on the same wires: the host link gets gateway6, each node's eth0
its ip6, cni0 the first host (::1) of the node's IPv6 pod subnet, host-gw routes to the other nodes'
IPv6 pod subnets, pods their IPv6 address and a default route via cni0's ::1. Containment is IPv4's:
no IPv6 default route in a node, no router advertisements taken or solicited and no autoconfiguration
anywhere (accept_ra=0, autoconf=0 before a link comes up), the host ignores ICMPv6 redirects from the
lab, and addresses are added `nodad` so they work at once (the lab alone decides who has which address).
An IPv6-only lab (an IPv6 network) has the same IPv6 settings with its IPv6 addresses in the primary
places (gateway, node ip, cni0's ::1, pods' address): its namespaces have no IPv4 address but loopback.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import socket
from dataclasses import dataclass
from typing import Iterable, Optional

from netemu import paths
from netemu.dataplane import names, nsutil
from netemu.dataplane.ipcmd import ip_batch, netns_list


def first_host(cidr: str) -> str:
    """The first usable address of a subnet (.1, ::1): a node's cni0, its pods' gateway."""
    return str(next(ipaddress.ip_network(cidr).hosts()))


@dataclass(frozen=True)
class NodeNet:
    name: str
    ip: str
    pod_cidr: str
    ip6: Optional[str] = None  # dual-stack lab: the node's address on network6
    pod_cidr6: Optional[str] = None  # dual-stack lab: its IPv6 pod subnet (Node spec.podCIDRs[1])

    @property
    def gateway(self) -> str:
        return first_host(self.pod_cidr)

    @property
    def gateway6(self) -> Optional[str]:
        return first_host(self.pod_cidr6) if self.pod_cidr6 else None


@dataclass(frozen=True)
class PodNet:
    namespace: str
    name: str
    node: str
    ip: str
    prefixlen: int
    gateway: str
    ip6: Optional[str] = None  # dual-stack lab: status.podIPs[1], in the node's IPv6 pod subnet
    prefixlen6: Optional[int] = None
    gateway6: Optional[str] = None  # cni0's ::1


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
    ip6: Optional[str] = None  # a dual-stack lab: its address on network6 (IPv6 peering, the host's IPv6 route)


# IPv6 on an interface that takes part in a lab: no router advertisements taken (nor solicited: a node
# with accept_ra=0 sends no router solicitations), no addresses made up from them, no redirects believed
IPV6_QUIET = {"accept_ra": "0", "autoconf": "0", "accept_redirects": "0", "router_solicitations": "0"}


def ipv6_conf(scope: str, values: dict[str, str]) -> dict[str, str]:
    """sysctl keys of net.ipv6.conf.<scope> (all, default or an interface)."""
    return {f"net.ipv6.conf.{scope}.{k}": v for k, v in values.items()}


IPV6_OFF = {**ipv6_conf("all", {"disable_ipv6": "1"}), **ipv6_conf("default", {"disable_ipv6": "1"})}


def ipv6_on(*links: str) -> dict[str, str]:
    """A namespace with IPv6 and none of its self-configuration: all and default first (links made
    later take them), then the links that exist already (made with the kernel's defaults, accept_ra=1)."""
    out: dict[str, str] = {}
    for scope in ("all", "default", *links):
        out.update(ipv6_conf(scope, IPV6_QUIET))
    out.update(ipv6_conf("all", {"disable_ipv6": "0"}))
    out.update(ipv6_conf("default", {"disable_ipv6": "0"}))
    return out


class LabNet:
    def __init__(self, lab: str, network: str, gateway: str, service_cidr: str, nodes: list[NodeNet],
                 routers: Optional[list[RouterNet]] = None, network6: Optional[str] = None,
                 gateway6: Optional[str] = None, service_cidr6: Optional[str] = None):
        self.lab = lab
        self.network = ipaddress.ip_network(network)
        self.gateway = gateway
        self.service_cidr = service_cidr
        self.nodes = {n.name: n for n in nodes}
        self.routers = {r.name: r for r in routers or []}
        self.switch = names.switch_netns(lab)
        self.host_link = names.host_link(lab)
        # a dual-stack lab: the segment's IPv6 network, the host's address on it, the IPv6 service range
        self.network6 = ipaddress.ip_network(network6) if network6 else None
        self.gateway6 = gateway6 or (str(self.network6.network_address + 1) if self.network6 else None)
        self.service_cidr6 = service_cidr6

    @property
    def dual_stack(self) -> bool:
        return self.network6 is not None

    @property
    def ipv6_only(self) -> bool:
        return self.network.version == 6

    @property
    def ipv6(self) -> bool:
        """IPv6 on in the lab's namespaces and on the host link (a dual-stack or an IPv6-only lab)."""
        return self.dual_stack or self.ipv6_only

    def _nodad(self) -> str:
        """A primary address added without DAD (IPv6: it works at once, see the module's notes)."""
        return " nodad" if self.ipv6_only else ""

    def node_netns(self, node: str) -> str:
        return names.node_netns(self.lab, node)

    # ------------------------------------------------------------------ build
    def create_namespaces(self) -> None:
        ip_batch([f"netns add {self.switch}"] + [f"netns add {self.node_netns(n)}" for n in [*self.nodes, *self.routers]])

    def build(self) -> None:
        """Wire the namespaces made by create_namespaces()."""
        prefix = self.network.prefixlen
        if self.ipv6 and not os.path.isdir("/proc/sys/net/ipv6"):
            raise RuntimeError(f"this lab is {'IPv6-only' if self.ipv6_only else 'dual-stack'} but the kernel has "
                               f"IPv6 switched off (ipv6.disable=1)")
        # the host's end first: if the name is taken the lab stops here, before touching more
        # (an IPv6-only lab's gateway after the link's IPv6 sysctls: host_link_commands)
        ip_batch([
            f"link add {self.host_link} type veth peer name {names.SWITCH_HOST_PORT} netns {self.switch}",
            *([] if self.ipv6_only else [f"addr add {self.gateway}/{prefix} dev {self.host_link}"]),
        ])
        _quiet_host_link(self.host_link, self.ipv6)
        ip_batch(self.host_link_commands())
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
        # the switch has no address of either family: its bridge carries IPv6 frames with IPv6 off
        nsutil.write_sysctl_in(self.switch, {"net.bridge.bridge-nf-call-iptables": "0",
                                             "net.bridge.bridge-nf-call-ip6tables": "0",
                                             "net.ipv6.conf.all.disable_ipv6": "1"})
        for n in self.nodes.values():
            self._build_node(n, prefix)
        for r in self.routers.values():
            self._build_router(r, prefix)

    def host_link_commands(self) -> list[str]:
        """The host link's IPv6 address (after its sysctls, before it is up) and up."""
        cmds = []
        if self.ipv6_only:
            cmds.append(f"addr add {self.gateway}/{self.network.prefixlen} dev {self.host_link} nodad")
        if self.dual_stack:
            cmds.append(f"addr add {self.gateway6}/{self.network6.prefixlen} dev {self.host_link} nodad")
        return cmds + [f"link set {self.host_link} up"]

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
            **self.router_ipv6_sysctls(r),
        })
        ip_batch(self.router_commands(r, prefix), netns=ns)
        nsutil.write_sysctl_in(ns, {f"net.ipv4.conf.{names.NODE_UPLINK}.send_redirects": "0"})

    def router_commands(self, r: RouterNet, prefix: int) -> list[str]:
        """Its addresses (a dual-stack lab's ip6 without DAD, as a node's) and up; no route but the
        connected ones: what it forwards to the pools it learns over BGP."""
        cmds = ["link set lo up", f"addr add {r.ip}/{prefix} dev {names.NODE_UPLINK}"]
        if self.dual_stack and r.ip6:
            cmds.append(f"addr add {r.ip6}/{self.network6.prefixlen} dev {names.NODE_UPLINK} nodad")
        return cmds + [f"link set {names.NODE_UPLINK} up"]

    def router_ipv6_sysctls(self, r: RouterNet) -> dict[str, str]:
        """A router's IPv6: off, or in a dual-stack lab a node's settings (no RA, no autoconfiguration, no
        default route) with forwarding and ECMP by flow. (IPv6 has no send_redirects switch: the host
        link ignores redirects instead.)"""
        if not (self.dual_stack and r.ip6):
            return dict(IPV6_OFF)
        return {**ipv6_on(names.NODE_UPLINK), "net.ipv6.conf.all.forwarding": "1",
                "net.ipv6.fib_multipath_hash_policy": "1"}

    def _build_node(self, n: NodeNet, prefix: int) -> None:
        ns = self.node_netns(n.name)
        # forwarding and bridge-netfilter first: pods' traffic must meet kube-proxy's rules
        nsutil.write_sysctl_in(ns, self.node_sysctls())
        ip_batch(self.node_commands(n, prefix), netns=ns)

    def node_sysctls(self) -> dict[str, str]:
        values = {
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
        }
        if self.ipv6:
            for key in IPV6_OFF:
                del values[key]
            # eth0 exists already (the switch made it): its own values, before it comes up
            values.update(ipv6_on(names.NODE_UPLINK))
            values.update({
                "net.ipv6.conf.all.forwarding": "1",  # (also default and every link)
                "net.bridge.bridge-nf-call-ip6tables": "1",
                "net.ipv6.icmp.ratelimit": "0",  # as IPv4's: ip6tables' REJECT answers at once
            })
        return values

    def node_commands(self, n: NodeNet, prefix: int) -> list[str]:
        cmds = [
            "link set lo up",
            f"addr add {n.ip}/{prefix} dev {names.NODE_UPLINK}{self._nodad()}",
        ]
        if self.dual_stack and n.ip6:
            cmds.append(f"addr add {n.ip6}/{self.network6.prefixlen} dev {names.NODE_UPLINK} nodad")
        cmds += [
            f"link set {names.NODE_UPLINK} up",
            f"link add {names.NODE_BRIDGE} address {_mac(self.lab + '/' + n.name + '/cni0')} type bridge",
            f"addr add {n.gateway}/{ipaddress.ip_network(n.pod_cidr).prefixlen} dev {names.NODE_BRIDGE}{self._nodad()}",
        ]
        if self.dual_stack and n.pod_cidr6:
            cmds.append(f"addr add {n.gateway6}/{ipaddress.ip_network(n.pod_cidr6).prefixlen} "
                        f"dev {names.NODE_BRIDGE} nodad")
        cmds += [
            f"link set {names.NODE_BRIDGE} up",
            f"route add {self.service_cidr} dev {names.NODE_UPLINK} src {n.ip}",
        ]
        if self.dual_stack and n.ip6 and self.service_cidr6:
            # the node's own connections to IPv6 ClusterIPs need a route too (there is no default one)
            cmds.append(f"route add {self.service_cidr6} dev {names.NODE_UPLINK} src {n.ip6}")
        for other in self.nodes.values():
            if other.name != n.name:
                cmds.append(f"route add {other.pod_cidr} via {other.ip} dev {names.NODE_UPLINK}")
        if self.dual_stack and n.ip6:
            for other in self.nodes.values():
                if other.name != n.name and other.ip6 and other.pod_cidr6:
                    cmds.append(f"route add {other.pod_cidr6} via {other.ip6} dev {names.NODE_UPLINK}")
        return cmds

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
                cmds += self.pod_port_commands(p)
            ip_batch(cmds, netns=self.node_netns(node))
        for p in pods:
            configure_pod_interface(self.pod_netns(p.namespace, p.name), p)

    def pod_port_commands(self, p: PodNet) -> list[str]:
        """The pod's veth pair, made in its node: the node's end a port of cni0."""
        veth = names.pod_veth(p.namespace, p.name)
        return [
            # the pod's end is created inside the pod's namespace, as its second link
            f"link add {veth} type veth peer name {names.POD_IF} netns {self.pod_netns(p.namespace, p.name)}"
            f" index {POD_IF_INDEX}",
            # a bridge port needs no IPv6 address of its own (cni0 has the node's): no link-local
            # address, DAD or MLD report per pod
            *([f"link set {veth} addrgenmode none"] if self.ipv6 else []),
            f"link set {veth} master {names.NODE_BRIDGE} up",
            # a pod reaching its own Service may be sent back to itself (hairpin)
            f"link set dev {veth} type bridge_slave hairpin on",
        ]

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
        for key, value in pod_sysctls(p).items():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)
        with IPRoute() as ipr:
            ipr.link("set", index=1, state="up")
            if ":" in p.ip:  # an IPv6-only lab's pod: its one address is IPv6
                ipr.addr("add", index=POD_IF_INDEX, address=p.ip, prefixlen=p.prefixlen, flags=IFA_F_NODAD)
            else:
                ipr.addr("add", index=POD_IF_INDEX, address=p.ip, prefixlen=p.prefixlen)
            if p.ip6:
                ipr.addr("add", index=POD_IF_INDEX, address=p.ip6, prefixlen=p.prefixlen6, flags=IFA_F_NODAD)
            ipr.link("set", index=POD_IF_INDEX, state="up")
            if ":" in p.gateway:
                ipr.route("add", dst="::/0", gateway=p.gateway, oif=POD_IF_INDEX, family=socket.AF_INET6)
            else:
                ipr.route("add", dst="default", gateway=p.gateway, oif=POD_IF_INDEX)
            if p.ip6 and p.gateway6:
                ipr.route("add", dst="::/0", gateway=p.gateway6, oif=POD_IF_INDEX, family=socket.AF_INET6)


IFA_F_NODAD = 0x02  # linux/if_addr.h


def pod_sysctls(p: PodNet) -> dict[str, str]:
    """An IPv4 pod: IPv6 off (no link-local addresses, DAD or router solicitations per pod). A pod of a
    dual-stack or an IPv6-only lab: IPv6 on, configured by netemu only (its eth0 was made with the
    kernel's defaults)."""
    return ipv6_on(names.POD_IF) if p.ip6 or ":" in p.ip else dict(IPV6_OFF)


def host_link_sysctls(dual_stack: bool) -> dict[str, str]:
    """The host link's IPv6 settings (in the root namespace, keys under net.ipv6.conf.<link>). IPv4 lab:
    IPv6 off, no chatter (router solicitations, DAD) from the host onto the segment. Dual-stack: IPv6
    on, but the host takes no router advertisement, address or redirect from the lab (a node announcing
    itself as a default router would otherwise pull the host's traffic into the lab, or a redirect steer
    it), whatever the host's defaults (accept_ra=1, autoconf=1) say. The quiet settings go first: the
    link is still down, nothing is sent before they hold."""
    if not dual_stack:
        return {"disable_ipv6": "1"}
    return {**IPV6_QUIET, "disable_ipv6": "0"}


def _quiet_host_link(link: str, dual_stack: bool = False) -> None:
    for key, value in host_link_sysctls(dual_stack).items():
        try:
            with open(f"/proc/sys/net/ipv6/conf/{link}/{key}", "w") as f:
                f.write(value)
        except OSError:
            if dual_stack:
                raise  # an IPv6 lab with a host link that listens to router advertisements: no
            return
