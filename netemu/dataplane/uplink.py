"""A real interface on the lab segment (`netemu up --uplink IFACE`, or `uplink:` in the Lab document).

The interface leaves its namespace and becomes a port of the segment's bridge:

    laptop ── (host-only network) ── eth1 ─┐
    host (root ns) ne-<lab> ──veth── host ─┤ [ne-<lab>: br0] ── n-<node> ──veth── eth0 [ne-<lab>_<node>]

so machines on that network reach node IPs, NodePorts and LoadBalancer IPs directly: the nodes answer
ARP for their own addresses, the speakers for LB addresses. Only the segment is joined: the interface
has no address while it is a bridge port, nodes have no default route, and the host's end of the lab
(`ne-<lab>`) neither forwards what arrives on it nor answers ARP for the host's other addresses.

What the interface was (name, namespace, MAC, MTU, up/down, addresses, routes) is written to
`<lab dir>/uplink.json` *before* it is moved, so that `down`, even after a crash of the control
process, gives it back as it was. `detach()` must run before the segment's namespace is deleted:
deleting a namespace sends a physical interface back to the root namespace without its addresses
and routes, and destroys a veth.

An interface is refused (unless forced) when it carries a default route or routes to other
networks, or has an address outside the lab network: moving it would cut the machine off a network.
Some refusals are never forced: a missing interface, loopback, a lab's own link, a bridge or bond
port, a wireless interface.

    IFACE           an interface of the namespace netemu runs in (the host)
    NETNS/IFACE     an interface inside the named network namespace (/run/netns/NETNS)
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

from netemu import paths
from netemu.dataplane import names
from netemu.dataplane.ipcmd import IpError, ip_json

log = logging.getLogger("netemu.uplink")

STATE_NAME = "uplink.json"
INNER_FALLBACK = "uplink0"  # the name inside the segment's namespace if the original one is taken there
FORCE_HINT = "--force-uplink"
# the segment namespace's own links (see names.py): an uplink must not take one of these names there
_SWITCH_NAMES = {"lo", names.SWITCH_BRIDGE, names.SWITCH_HOST_PORT}


class UplinkError(RuntimeError):
    """A refusal or a failure, with a message for the user."""


# --------------------------------------------------------------------------- what an interface is
@dataclass
class UplinkState:
    name: str                           # its name where it came from
    netns: Optional[str]                # None: the namespace netemu runs in (the host)
    netns_inode: int                    # that namespace's identity, to check it is still the same one
    mac: str
    ifindex: int
    mtu: int
    up: bool
    kind: str                           # "veth", "" for a physical interface, ...
    addresses: list[dict] = field(default_factory=list)   # ip -j addr's addr_info entries worth restoring
    routes: list[dict] = field(default_factory=list)      # ip -j route entries worth restoring (+ "family")
    disable_ipv6: Optional[str] = None
    lab: str = ""
    switch_netns: str = ""
    inner_name: str = ""                # its name inside the segment's namespace
    attached_at: float = 0.0

    @property
    def where(self) -> str:
        return f"{self.netns}/{self.name}" if self.netns else self.name


def parse_ref(ref: str) -> tuple[Optional[str], str]:
    """"eth1" -> (None, "eth1"); "ns/eth1" -> ("ns", "eth1")."""
    ref = ref.strip()
    netns, sep, ifname = ref.rpartition("/")
    if not ifname or (sep and not netns) or any(c.isspace() for c in ifname):
        raise UplinkError(f"--uplink {ref!r}: expected an interface name (IFACE) or NETNS/IFACE")
    if len(ifname) > names.IFNAMSIZ:
        raise UplinkError(f"--uplink {ref!r}: {ifname} is not an interface name (at most {names.IFNAMSIZ} characters)")
    return (netns or None), ifname


def _ns_args(netns: Optional[str]) -> list[str]:
    return ["-n", netns] if netns else []


def _ip(args: list[str], netns: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", *_ns_args(netns), *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        where = f" (in namespace {netns})" if netns else ""
        raise IpError(f"ip {' '.join(args)}{where}: {res.stderr.strip()}")
    return res


def _netns_inode(netns: Optional[str]) -> int:
    path = f"/run/netns/{netns}" if netns else "/proc/self/ns/net"
    return os.stat(path).st_ino


def _link(ifname: str, netns: Optional[str]) -> Optional[dict]:
    try:
        links = ip_json(["-d", "link", "show", "dev", ifname], netns=netns)
    except IpError:
        return None
    return links[0] if links else None


def _sysctl_path(ifname: str, key: str, family: str = "ipv4") -> str:
    return f"/proc/sys/net/{family}/conf/{ifname}/{key}"


def _read_sysctl(netns: Optional[str], ifname: str, key: str, family: str) -> Optional[str]:
    return _in(netns, lambda: _read(_sysctl_path(ifname, key, family)))


def _write_sysctl(netns: Optional[str], ifname: str, key: str, value: str, family: str = "ipv4") -> None:
    def w():
        with open(_sysctl_path(ifname, key, family), "w") as f:
            f.write(value)
    _in(netns, w)


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _in(netns: Optional[str], fn):
    if not netns:
        return fn()
    from netemu.dataplane import nsutil

    with nsutil.in_netns(netns):
        return fn()


def _all_routes(netns: Optional[str]) -> list[dict]:
    out = []
    for fam in ("4", "6"):
        try:
            routes = ip_json([f"-{fam}", "route", "show", "table", "all"], netns=netns)
        except IpError:
            continue
        for r in routes:
            r["family"] = "inet" if fam == "4" else "inet6"
            out.append(r)
    return out


def _route_devs(r: dict) -> set[str]:
    devs = {r["dev"]} if r.get("dev") else set()
    devs.update(nh.get("dev") for nh in r.get("nexthops") or [] if nh.get("dev"))
    return devs


def _auto_route(r: dict) -> bool:
    """Routes the kernel makes by itself (for addresses, link-local, multicast): never restored."""
    if r.get("type") in ("local", "broadcast", "multicast", "anycast"):
        return True
    if r.get("protocol") in ("kernel", "ra"):
        return True
    dst = r.get("dst", "")
    return dst.startswith("fe80:") or dst.startswith("ff00:")


def _is_default(r: dict) -> bool:
    return r.get("dst") in ("default", "0.0.0.0/0", "::/0")


def _route_text(r: dict) -> str:
    parts = [r.get("dst", "?")]
    if r.get("gateway"):
        parts += ["via", r["gateway"]]
    if r.get("dev"):
        parts += ["dev", r["dev"]]
    if r.get("table"):
        parts += ["table", str(r["table"])]
    return " ".join(parts)


def inspect(ifname: str, netns: Optional[str] = None) -> UplinkState:
    """What an interface is now: enough to give it back exactly."""
    link = _link(ifname, netns)
    if link is None:
        where = f"namespace {netns}" if netns else "this host"
        raise UplinkError(f"uplink {ifname}: no such interface in {where}")
    addrs = []
    for a in (ip_json(["addr", "show", "dev", ifname], netns=netns) or [{}])[0].get("addr_info", []):
        if a.get("family") == "inet6" and (a.get("scope") == "link" or a.get("dynamic")):
            continue  # made again by the kernel / router advertisements
        addrs.append(a)
    routes = [r for r in _all_routes(netns) if r.get("dev") == ifname and not _auto_route(r)]
    return UplinkState(
        name=ifname, netns=netns, netns_inode=_netns_inode(netns), mac=link.get("address", ""),
        ifindex=int(link.get("ifindex", 0)),
        mtu=int(link.get("mtu", 1500)), up="UP" in (link.get("flags") or []),
        kind=(link.get("linkinfo") or {}).get("info_kind", ""), addresses=addrs, routes=routes,
        disable_ipv6=_read_sysctl(netns, ifname, "disable_ipv6", "ipv6"))


# --------------------------------------------------------------------------- the checks
def refusals(ifname: str, network: str, netns: Optional[str] = None,
             lab: Optional[str] = None, network6: Optional[str] = None) -> tuple[list[str], list[str]]:
    """Why `ifname` (in `netns`, default: the host's namespace) should not become the uplink of a lab
    on `network`: (hard, forceable). Hard reasons are never overridden; forceable ones give way to
    --force-uplink. The routes looked at are those of the interface's own namespace. A dual-stack lab
    (``network6``) also takes the interface's routes and addresses inside its IPv6 segment."""
    net = ipaddress.ip_network(network)
    nets = [net] + ([ipaddress.ip_network(network6)] if network6 else [])
    lab_nets = f"{network},{network6}" if network6 else network

    def inside(x) -> bool:
        return any(x.version == n.version and (x.subnet_of(n) if hasattr(x, "subnet_of") else x in n) for n in nets)

    hard: list[str] = []
    soft: list[str] = []
    link = _link(ifname, netns)
    if link is None:
        where = f"namespace {netns}" if netns else "this host"
        return [f"there is no interface {ifname} in {where}"], []
    flags = link.get("flags") or []
    kind = (link.get("linkinfo") or {}).get("info_kind", "")
    if "LOOPBACK" in flags or link.get("link_type") == "loopback":
        hard.append(f"{ifname} is a loopback interface")
    if link.get("link_type") not in (None, "ether", "loopback"):
        hard.append(f"{ifname} is not an Ethernet interface (link type {link.get('link_type')}): "
                    "it cannot be a bridge port")
    if kind in ("bridge", "bond", "team", "vrf", "openvswitch"):
        hard.append(f"{ifname} is a {kind} device: netemu takes an Ethernet interface (or a veth) as uplink")
    if link.get("master"):
        hard.append(f"{ifname} is a port of {link['master']}: take it out of there first "
                    f"(ip link set {ifname} nomaster)")
    if not netns and (os.path.exists(f"/sys/class/net/{ifname}/wireless")
                      or os.path.exists(f"/sys/class/net/{ifname}/phy80211")):
        hard.append(f"{ifname} is a wireless interface: it cannot move into a network namespace, and access "
                    "points drop frames from the nodes' MAC addresses anyway; use a wired or host-only interface")
    own = {names.host_link(l) for l in paths.running_labs() + ([lab] if lab else [])}
    if not netns and ifname in own:
        hard.append(f"{ifname} is a lab's own link to the host")
    for r in _all_routes(netns):
        if ifname not in _route_devs(r) or r.get("type") in ("local", "broadcast", "multicast", "anycast"):
            continue
        if _is_default(r):  # also one learnt from router advertisements
            whose = f"namespace {netns}'s" if netns else "this machine's"
            soft.append(f"{ifname} carries {whose} default route ({_route_text(r)}): taking it would cut the "
                        "machine off its network")
            continue
        if _auto_route(r):
            continue
        try:
            dst = ipaddress.ip_network(r["dst"] if "/" in r["dst"] else r["dst"] + ("/32" if ":" not in r["dst"]
                                                                                      else "/128"), strict=False)
        except (KeyError, ValueError):
            continue
        if not inside(dst):
            soft.append(f"{ifname} carries a route to another network ({_route_text(r)})")
    for a in (ip_json(["addr", "show", "dev", ifname], netns=netns) or [{}])[0].get("addr_info", []):
        if a.get("family") == "inet6" and a.get("scope") == "link":
            continue
        ip = ipaddress.ip_address(a["local"])
        if not inside(ip):
            soft.append(f"{ifname} has the address {a['local']}/{a['prefixlen']}, outside the lab network {lab_nets}")
    return hard, soft


def preflight(ref: str, network: str, force: bool = False, lab: Optional[str] = None,
              network6: Optional[str] = None) -> list[str]:
    """The check `netemu up` runs before building anything. Raises UplinkError with every reason
    when the interface is refused; returns warnings (forced reasons, a down link, a small MTU)."""
    netns, ifname = parse_ref(ref)
    if netns and not os.path.exists(f"/run/netns/{netns}"):
        raise UplinkError(f"uplink {ref}: there is no network namespace {netns}")
    hard, soft = refusals(ifname, network, netns=netns, lab=lab, network6=network6)
    if network6 and host_forwards_ipv6():
        hard.append(ipv6_forwarding_refusal())
    if hard or (soft and not force):
        reasons = hard + soft
        hint = "" if hard else f"\n({FORCE_HINT} takes it anyway; `down` gives it back as it was)"
        raise UplinkError(f"refusing {ref} as the lab's uplink:\n  - " + "\n  - ".join(reasons) + hint)
    warnings = [f"uplink {ref} taken with {FORCE_HINT}: {s}" for s in soft]
    link = _link(ifname, netns) or {}
    if "NO-CARRIER" in (link.get("flags") or []) or link.get("operstate") == "DOWN":
        warnings.append(f"uplink {ref} has no carrier (is its cable, or the VM's network, connected?)")
    if int(link.get("mtu", 1500)) < 1500:
        warnings.append(f"uplink {ref} has MTU {link['mtu']}: frames larger than that between the lab and "
                        "the network are dropped")
    return warnings


def host_forwards_ipv6() -> bool:
    return (_read("/proc/sys/net/ipv6/conf/all/forwarding") or "0").strip() == "1"


def ipv6_forwarding_refusal() -> str:
    """Why a dual-stack lab takes no uplink on a host that forwards IPv6: IPv4's per-interface
    `forwarding` stops what arrives on the host's lab link from going further, IPv6 has no such switch
    (only the global one), so the real network could reach the host's other networks through the lab."""
    return ("this host forwards IPv6 (net.ipv6.conf.all.forwarding=1): a dual-stack lab's uplink would let the "
            "uplink's network reach the host's other networks over IPv6 through the lab's host link (IPv6 has "
            "no per-interface forwarding switch); turn IPv6 forwarding off, or use an IPv4-only lab")


def host_side_link(ref: Optional[str]) -> Optional[str]:
    """The interface name to leave out of the host's address/route conflict check (daemon/lifecycle
    .host_conflicts(own_link=...)): the uplink when it is one of the host's interfaces."""
    if not ref:
        return None
    netns, ifname = parse_ref(ref)
    return None if netns else ifname


# --------------------------------------------------------------------------- attach / detach
def state_path(lab: str) -> str:
    return os.path.join(paths.lab_dir(lab), STATE_NAME)


def load_state(lab: str) -> Optional[UplinkState]:
    try:
        with open(state_path(lab)) as f:
            return UplinkState(**json.load(f))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        log.error("unreadable uplink state %s: %s", state_path(lab), e)
        return None


def _save_state(st: UplinkState) -> None:
    path = state_path(st.lab)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(asdict(st), f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def attach(lab: str, ref: str) -> str:
    """Move the interface into the lab's segment namespace and make it a port of br0. The lab's
    network must be built (the segment namespace and br0 exist). Returns a line for the user."""
    netns, ifname = parse_ref(ref)
    if load_state(lab) is not None:
        raise UplinkError(f"lab {lab} already has an uplink ({state_path(lab)})")
    st = inspect(ifname, netns)
    hard, _ = refusals(ifname, "0.0.0.0/0", netns=netns, lab=lab)
    if hard:
        raise UplinkError(f"refusing {ref} as the lab's uplink: " + "; ".join(hard))
    switch = names.switch_netns(lab)
    taken = {link["ifname"] for link in ip_json(["link", "show"], netns=switch)}
    inner = ifname if ifname not in taken and ifname not in _SWITCH_NAMES and not ifname.startswith("n-") \
        else INNER_FALLBACK
    st.lab, st.switch_netns, st.inner_name, st.attached_at = lab, switch, inner, time.time()
    _save_state(st)  # first: a crash from here on is undone by detach()
    _ip(["link", "set", "dev", ifname, "down"], netns)
    _ip(["link", "set", "dev", ifname, "netns", switch, "name", inner], netns)
    try:  # no IPv6 chatter from the lab segment's port; the port has no address of its own
        _write_sysctl(switch, inner, "disable_ipv6", "1", "ipv6")
    except OSError:
        pass
    _ip(["link", "set", "dev", inner, "master", names.SWITCH_BRIDGE], switch)
    _ip(["link", "set", "dev", inner, "up"], switch)
    _isolate_host_link(lab)
    log.info("uplink %s attached to %s/%s as %s", st.where, switch, names.SWITCH_BRIDGE, inner)
    return f"uplink {st.where} is a port of the lab segment (br0 in namespace {switch})"


def _isolate_host_link(lab: str) -> None:
    """The host's end of the segment, now reachable from a real network: packets that arrive on it
    are not forwarded elsewhere (IPv4 per-interface forwarding is about packets received there), it
    answers ARP only for its own (gateway) address and drops packets from sources it would not route
    back through it. These settings go with the link at `down`."""
    link = names.host_link(lab)
    for key, value in (("forwarding", "0"), ("arp_ignore", "1"), ("arp_announce", "2"), ("rp_filter", "1"),
                       ("proxy_arp", "0")):
        try:
            _write_sysctl(None, link, key, value)
        except OSError as e:
            log.warning("uplink: %s.%s=%s: %s", link, key, value, e)


def _find(st: UplinkState) -> tuple[Optional[str], Optional[str], bool]:
    """Where the interface is now: (namespace, name, in_switch). Namespace None = netemu's own."""
    mac = st.mac.lower()

    def by_mac(netns: Optional[str]) -> Optional[str]:
        try:
            links = ip_json(["link", "show"], netns=netns)
        except IpError:
            return None
        for link in links:
            if (link.get("address") or "").lower() == mac and link.get("ifname") != names.SWITCH_BRIDGE:
                return link["ifname"]
        return None

    if os.path.exists(f"/run/netns/{st.switch_netns}"):
        link = _link(st.inner_name, st.switch_netns)
        if link is not None and (link.get("address") or "").lower() == mac:
            return st.switch_netns, st.inner_name, True
        found = by_mac(st.switch_netns)
        if found:
            return st.switch_netns, found, True
    if st.netns is None or os.path.exists(f"/run/netns/{st.netns}"):
        found = by_mac(st.netns)
        if found:
            return st.netns, found, False
    if st.netns is not None:  # a physical interface comes back to the initial namespace by itself
        found = by_mac(None)
        if found:
            return None, found, False
    return None, None, False


def detach(lab: str) -> list[str]:
    """Give the lab's uplink back as it was (safe to run again; nothing to do without state).
    Never raises: it runs in teardown. Returns what it did, for the user, or problems."""
    st = load_state(lab)
    if st is None:
        return []
    try:
        msgs = _detach(st)
    except Exception as e:  # keep tearing down; the state file stays for another try
        log.exception("giving back the uplink")
        return [f"uplink {st.where}: could not give it back: {e} (its record is in {state_path(lab)})"]
    try:
        os.unlink(state_path(lab))
    except FileNotFoundError:
        pass
    return msgs


def _detach(st: UplinkState) -> list[str]:
    msgs: list[str] = []
    netns, cur, in_switch = _find(st)
    if cur is None:
        return [f"uplink {st.where}: not found anywhere (MAC {st.mac}); was it removed?"]
    target_ns = st.netns
    if target_ns is not None and (not os.path.exists(f"/run/netns/{target_ns}")
                                  or _netns_inode(target_ns) != st.netns_inode):
        msgs.append(f"uplink {st.where}: its namespace {target_ns} is gone; giving it to the host instead")
        target_ns = None
    if in_switch:
        _ip(["link", "set", "dev", cur, "nomaster"], netns, check=False)
    if netns != target_ns or in_switch:
        name = st.name if _link(st.name, target_ns) is None else cur
        _ip(["link", "set", "dev", cur, "down"], netns, check=False)
        _move(cur, netns, target_ns, name, st.ifindex)
        if name != st.name:
            msgs.append(f"uplink {st.where}: the name {st.name} is taken now; it is back as {name}")
        cur = name
    elif cur != st.name and _link(st.name, target_ns) is None:
        _ip(["link", "set", "dev", cur, "down"], target_ns, check=False)
        _ip(["link", "set", "dev", cur, "name", st.name], target_ns)
        cur = st.name
    msgs += _restore_config(st, cur, target_ns)
    msgs.insert(0, f"uplink {st.where} given back" + (f" (as {cur})" if cur != st.name else ""))
    return msgs


def _move(ifname: str, from_ns: Optional[str], to_ns: Optional[str], name: str, ifindex: int) -> None:
    """Move a link to another namespace (None: netemu's own), renaming it, with its old ifindex
    when that is free there (IFLA_NEW_IFINDEX); `ip link set netns` when that fails."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    fd = os.open(f"/run/netns/{to_ns}" if to_ns else f"/proc/{os.getpid()}/ns/net", os.O_RDONLY)
    try:
        def move():
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname=ifname)[0]
                try:
                    ipr.link("set", index=idx, net_ns_fd=fd, ifname=name, **({"new_ifindex": ifindex} if ifindex else {}))
                except NetlinkError:
                    ipr.link("set", index=idx, net_ns_fd=fd, ifname=name)
        try:
            _in(from_ns, move)
            return
        except Exception as e:  # fall back to iproute2
            log.warning("uplink: moving %s over netlink: %s", ifname, e)
    finally:
        os.close(fd)
    _ip(["link", "set", "dev", ifname, "netns", to_ns or str(os.getpid()), "name", name], from_ns)


def _restore_config(st: UplinkState, ifname: str, netns: Optional[str]) -> list[str]:
    problems: list[str] = []
    _ip(["link", "set", "dev", ifname, "mtu", str(st.mtu)], netns, check=False)
    if st.disable_ipv6 is not None:
        try:
            _write_sysctl(netns, ifname, "disable_ipv6", st.disable_ipv6, "ipv6")
        except OSError:
            pass
    have = {(a.get("local"), a.get("prefixlen"))
            for a in (ip_json(["addr", "show", "dev", ifname], netns=netns) or [{}])[0].get("addr_info", [])}
    # primaries before secondaries: a secondary needs its primary of the same subnet
    for a in sorted(st.addresses, key=lambda a: bool(a.get("secondary"))):
        if (a.get("local"), a.get("prefixlen")) in have:
            continue
        args = ["-6" if a.get("family") == "inet6" else "-4", "addr", "add", f"{a['local']}/{a['prefixlen']}"]
        if a.get("address") and a.get("address") != a.get("local"):  # point-to-point peer
            args += ["peer", f"{a['address']}/{a['prefixlen']}"]
        if a.get("broadcast"):
            args += ["broadcast", a["broadcast"]]
        if a.get("scope") and a.get("scope") != "global":
            args += ["scope", a["scope"]]
        if a.get("family") == "inet" and a.get("label") and a["label"] != st.name:
            label = a["label"] if ifname == st.name else ifname + a["label"][len(st.name):]
            args += ["label", label]
        if a.get("noprefixroute"):
            args.append("noprefixroute")
        args += ["dev", ifname]
        res = _ip(args, netns, check=False)
        if res.returncode != 0:
            problems.append(f"address {a['local']}/{a['prefixlen']}: {res.stderr.strip()}")
    if st.up:
        _ip(["link", "set", "dev", ifname, "up"], netns, check=False)
    for r in st.routes:
        args = ["-6" if r.get("family") == "inet6" else "-4", "route", "add"]
        if r.get("type") and r["type"] != "unicast":
            args.append(r["type"])
        args.append(r["dst"])
        if r.get("gateway"):
            args += ["via", r["gateway"]]
        args += ["dev", ifname]
        for key, opt in (("protocol", "proto"), ("scope", "scope"), ("prefsrc", "src"), ("metric", "metric"),
                         ("table", "table")):
            if r.get(key) not in (None, ""):
                args += [opt, str(r[key])]
        if "onlink" in (r.get("flags") or []):
            args.append("onlink")
        res = _ip(args, netns, check=False)
        if res.returncode != 0 and "File exists" not in res.stderr:
            problems.append(f"route {_route_text(r)}: {res.stderr.strip()}")
    return [f"uplink {st.where}: could not restore {p}" for p in problems]
