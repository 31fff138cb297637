"""A picture of a lab (pure): nodes, pods grouped by deployment, services and their endpoints,
LoadBalancer IPs and the node that announces each, as Graphviz DOT or a Mermaid flowchart.

Input is what the API's `get` returns (plain dicts, as `kubectl get -o json` items); `announcers`
maps a LoadBalancer IP to the node answering ARP for it (MetalLB layer 2), when known. Without it,
MetalLB's `nodeAssigned` events (`announcing from node "w1-k8s" with protocol "layer2"`) or the
annotation ANNOUNCER_ANNOTATION on the Service are used.

    LB 192.168.1.11 ──> service lb-svc ──> pod (deployment box) ··· node (the lab segment)
           ^ announces (ARP)                                        │
           └──────────────────────────────────── node w1-k8s ───────┘
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

from netemu.wellknown import CONTROL_PLANE_LABEL, POD_TEMPLATE_HASH_LABEL, SERVICE_NAME_LABEL

ANNOUNCER_ANNOTATION = "netemu.dev/announcing-node"
_ASSIGNED = re.compile(r'announcing from node "([^"]+)"')


@dataclass
class GNode:
    name: str
    ip: str = ""
    role: str = ""
    ready: bool = True
    unschedulable: bool = False
    pod_cidr: str = ""  # both families' in a dual-stack lab: "172.16.1.0/24,fd00:10:244:1::/64"
    ip6: str = ""  # its IPv6 InternalIP (a dual-stack lab)


@dataclass
class GPod:
    namespace: str
    name: str
    ip: str = ""
    node: str = ""
    ready: bool = False
    ip6: str = ""  # a dual-stack lab's pod: its IPv6 address (status.podIPs)
    phase: str = ""
    terminating: bool = False
    group: str = ""          # "deployment/NAME", "replicaset/NAME", "statefulset/...", or "" (standalone)


@dataclass
class GEndpoint:
    address: str
    port: str = ""
    ready: bool = True
    pod: Optional[tuple[str, str]] = None   # (namespace, name) of its targetRef pod
    node: str = ""


@dataclass
class GService:
    namespace: str
    name: str
    type: str = "ClusterIP"
    cluster_ip: str = ""  # a dual-stack Service's: both, "10.96.0.20,fd00:10:96::14"
    ports: list[str] = field(default_factory=list)      # "http 80->80/TCP nodePort 30000"
    node_ports: list[int] = field(default_factory=list)
    external_ips: list[str] = field(default_factory=list)
    lb_ips: list[str] = field(default_factory=list)
    external_name: str = ""
    endpoints: list[GEndpoint] = field(default_factory=list)


@dataclass
class GGroup:
    key: str                 # "ns/deployment/NAME"
    namespace: str
    kind: str                # Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, "" (standalone pods)
    name: str
    ready: str = ""          # "3/3"
    pods: list[GPod] = field(default_factory=list)

    @property
    def title(self) -> str:
        ns = "" if self.namespace == "default" else f"{self.namespace}/"
        if not self.kind:
            return f"{ns}pods" if ns else "pods"
        return f"{self.kind.lower()} {ns}{self.name}" + (f" ({self.ready})" if self.ready else "")


@dataclass
class Picture:
    lab: str = ""
    network: str = ""  # a dual-stack lab's: "192.168.1.0/24,fd00:192:168:1::/64", as kubeadm writes them
    gateway: str = ""
    nodes: list[GNode] = field(default_factory=list)
    groups: list[GGroup] = field(default_factory=list)
    services: list[GService] = field(default_factory=list)
    announcers: dict[str, str] = field(default_factory=dict)   # LB IP -> node

    @property
    def pods(self) -> list[GPod]:
        return [p for g in self.groups for p in g.pods]


# --------------------------------------------------------------------------- from API objects
def _meta(o: dict) -> dict:
    return o.get("metadata") or {}


def _ns(o: dict) -> str:
    return _meta(o).get("namespace") or "default"


def _owner(o: dict) -> Optional[dict]:
    refs = _meta(o).get("ownerReferences") or []
    return next((r for r in refs if r.get("controller")), refs[0] if refs else None)


def _cond(o: dict, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in (o.get("status") or {}).get("conditions") or [])


def _node_ip(n: dict, version: int = 4) -> str:
    for a in (n.get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP" and (":" in a.get("address", "")) == (version == 6):
            return a.get("address", "")
    return ""


def _both(*values: Optional[str]) -> str:
    """Both families' values in one text, IPv4 first, as kubeadm writes them ("v4,v6")."""
    return ",".join(v for v in values if v)


def lab_networks(spec: dict) -> tuple[str, str]:
    """(network, gateway) of a Lab spec as the API shows it; a dual-stack lab's with its IPv6 twins
    (gateway6 unset: the first address of network6, as the lab takes it)."""
    network6, gateway6 = spec.get("network6"), spec.get("gateway6")
    if network6 and not gateway6:
        try:
            gateway6 = str(ipaddress.ip_network(network6, strict=False).network_address + 1)
        except ValueError:
            gateway6 = None
    return _both(spec.get("network", ""), network6), _both(spec.get("gateway", ""), gateway6)


def _host_port(address: str, port: str) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"  # an IPv6 address in brackets


def _port_text(p: dict, svc_type: str) -> str:
    name = f"{p['name']} " if p.get("name") else ""
    target = p.get("targetPort", p.get("port"))
    text = f"{name}{p.get('port')}->{target}/{p.get('protocol', 'TCP')}"
    if p.get("nodePort") and svc_type in ("NodePort", "LoadBalancer"):
        text += f" nodePort {p['nodePort']}"
    return text


def announcers_from_events(events: Iterable[dict]) -> dict[tuple[str, str], str]:
    """(namespace, service) -> node, from MetalLB's latest nodeAssigned event of each Service."""
    latest: dict[tuple[str, str], tuple[float, str]] = {}
    for e in events:
        if e.get("kind") != "Service" or e.get("reason") != "nodeAssigned":
            continue
        m = _ASSIGNED.search(e.get("message") or "")
        if not m:
            continue
        key = (e.get("namespace") or "default", e.get("name", ""))
        t = float(e.get("last") or e.get("first") or 0)
        if key not in latest or t >= latest[key][0]:
            latest[key] = (t, m.group(1))
    return {k: v[1] for k, v in latest.items()}


def build(objects: Mapping[str, list[dict]], announcers: Optional[Mapping[str, str]] = None,
          events: Iterable[dict] = (), lab: Optional[dict] = None, namespace: Optional[str] = None) -> Picture:
    """objects: kind -> items (Node, Pod, Deployment, ReplicaSet, Service, EndpointSlice; missing kinds
    are fine). namespace: only that Kubernetes namespace (nodes are always drawn)."""
    def items(kind: str) -> list[dict]:
        got = objects.get(kind) or []
        return [o for o in got if namespace is None or kind == "Node" or _ns(o) == namespace]

    spec = (lab or {}).get("spec") or {}
    network, gateway = lab_networks(spec)
    pic = Picture(lab=_meta(lab or {}).get("name", ""), network=network, gateway=gateway)
    for n in items("Node"):
        nspec = n.get("spec") or {}
        cidrs = nspec.get("podCIDRs") or []
        pic.nodes.append(GNode(name=_meta(n)["name"], ip=_node_ip(n), ip6=_node_ip(n, 6),
                               role="control-plane" if CONTROL_PLANE_LABEL in
                               (_meta(n).get("labels") or {}) else "",
                               ready=_cond(n, "Ready"), unschedulable=bool(nspec.get("unschedulable")),
                               pod_cidr=_both(*cidrs) if len(cidrs) > 1 else nspec.get("podCIDR", "")))

    # pods -> their workload: Pod -> ReplicaSet -> Deployment
    rs_owner = {}
    for rs in items("ReplicaSet"):
        o = _owner(rs)
        rs_owner[(_ns(rs), _meta(rs)["name"])] = (o["kind"], o["name"]) if o else ("ReplicaSet", _meta(rs)["name"])
    deployments = {(_ns(d), _meta(d)["name"]): d for d in items("Deployment")}
    groups: dict[str, GGroup] = {}
    for p in items("Pod"):
        ns, name = _ns(p), _meta(p)["name"]
        o = _owner(p)
        kind, gname = "", ""
        if o:
            kind, gname = o["kind"], o["name"]
            if kind == "ReplicaSet":
                if (ns, gname) in rs_owner:
                    kind, gname = rs_owner[(ns, gname)]
                else:  # its ReplicaSet was not listed: the pod-template-hash names the Deployment
                    h = (_meta(p).get("labels") or {}).get(POD_TEMPLATE_HASH_LABEL)
                    if h and gname.endswith("-" + h) and (ns, gname[:-len(h) - 1]) in deployments:
                        kind, gname = "Deployment", gname[:-len(h) - 1]
        key = f"{ns}/{kind}/{gname}"
        g = groups.get(key)
        if g is None:
            g = groups[key] = GGroup(key=key, namespace=ns, kind=kind, name=gname)
            d = deployments.get((ns, gname)) if kind == "Deployment" else None
            if d is not None:
                want = (d.get("spec") or {}).get("replicas", 1)
                g.ready = f"{(d.get('status') or {}).get('readyReplicas', 0) or 0}/{want}"
        st = p.get("status") or {}
        ip6 = next((a.get("ip") for a in st.get("podIPs") or [] if ":" in (a.get("ip") or "")), "")
        g.pods.append(GPod(namespace=ns, name=name, ip=st.get("podIP", ""), node=(p.get("spec") or {}).get("nodeName", ""),
                           ip6=ip6 if ip6 != st.get("podIP") else "", ready=_cond(p, "Ready"), phase=st.get("phase", ""),
                           terminating=bool(_meta(p).get("deletionTimestamp")), group=key))
    # deployments with no pod (scaled to 0) still get their box
    for (ns, name), d in deployments.items():
        key = f"{ns}/Deployment/{name}"
        if key not in groups:
            want = (d.get("spec") or {}).get("replicas", 1)
            groups[key] = GGroup(key=key, namespace=ns, kind="Deployment", name=name, ready=f"0/{want}")
    pic.groups = sorted(groups.values(), key=lambda g: (g.namespace != "default", g.namespace, g.kind == "", g.name))
    for g in pic.groups:
        g.pods.sort(key=lambda p: p.name)

    slices: dict[tuple[str, str], list[dict]] = {}
    for s in items("EndpointSlice"):
        svc = (_meta(s).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if svc:
            slices.setdefault((_ns(s), svc), []).append(s)
    by_service = announcers_from_events(events)
    mapping = dict(announcers or {})
    for s in sorted(items("Service"), key=lambda s: (_ns(s) != "default", _ns(s), _meta(s)["name"])):
        sp, st = s.get("spec") or {}, s.get("status") or {}
        ns, name = _ns(s), _meta(s)["name"]
        typ = sp.get("type", "ClusterIP")
        ips = [i for i in sp.get("clusterIPs") or [] if i and i != "None"]
        gs = GService(namespace=ns, name=name, type=typ,
                      cluster_ip=_both(*ips) if len(ips) > 1 else sp.get("clusterIP", ""),
                      ports=[_port_text(p, typ) for p in sp.get("ports") or []],
                      node_ports=[p["nodePort"] for p in sp.get("ports") or [] if p.get("nodePort")
                                  and typ in ("NodePort", "LoadBalancer")],
                      external_ips=list(sp.get("externalIPs") or []),
                      lb_ips=[i["ip"] for i in (st.get("loadBalancer") or {}).get("ingress") or [] if i.get("ip")],
                      external_name=sp.get("externalName", ""))
        seen = set()
        for sl in slices.get((ns, name), []):
            port = ",".join(dict.fromkeys(str(p.get("port")) for p in sl.get("ports") or [] if p.get("port") is not None))
            for ep in sl.get("endpoints") or []:
                ref = ep.get("targetRef") or {}
                pod = (ref.get("namespace") or ns, ref["name"]) if ref.get("kind") == "Pod" and ref.get("name") else None
                cond = ep.get("conditions") or {}
                for addr in ep.get("addresses") or []:
                    if (addr, pod) in seen:
                        continue
                    seen.add((addr, pod))
                    gs.endpoints.append(GEndpoint(address=addr, port=port, ready=cond.get("ready", True) is not False,
                                                  pod=pod, node=ep.get("nodeName", "")))
        ann = (_meta(s).get("annotations") or {}).get(ANNOUNCER_ANNOTATION)
        for ip in gs.lb_ips:
            node = mapping.get(ip) or ann or by_service.get((ns, name))
            if node:
                pic.announcers[ip] = node
        pic.services.append(gs)
    return pic


# --------------------------------------------------------------------------- Graphviz DOT
def _dq(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _id(*parts: str) -> str:
    return _dq(":".join(parts))


def _qual(ns: str, name: str) -> str:
    return name if ns == "default" else f"{ns}/{name}"


def _pod_label(p: GPod) -> str:
    if p.terminating:
        state = "\n(Terminating)"
    elif not p.ready:
        state = f"\n({p.phase + ', ' if p.phase else ''}not ready)"
    else:
        state = ""
    return f"{p.name}\n{p.ip or 'no IP'}" + (f" on {p.node}" if p.node else "") + (f"\n{p.ip6}" if p.ip6 else "") \
        + state


def _svc_label(s: GService) -> str:
    lines = [f"svc {_qual(s.namespace, s.name)}", s.type]
    if s.type == "ExternalName":
        lines.append(s.external_name)
    elif s.cluster_ip:
        lines.append(f"clusterIP {s.cluster_ip}")
    lines += s.ports
    if s.external_ips:
        lines.append("externalIPs " + ", ".join(s.external_ips))
    return "\n".join(lines)


def _node_label(n: GNode) -> str:
    tags = [t for t in (n.role, "NotReady" if not n.ready else "", "SchedulingDisabled" if n.unschedulable else "") if t]
    return f"node {n.name}\n{n.ip}" + (f"\n{n.ip6}" if n.ip6 else "") + \
        (f"\npods {n.pod_cidr}" if n.pod_cidr else "") + \
        (f"\n{', '.join(tags)}" if tags else "")


def to_dot(pic: Picture) -> str:
    title = f"lab {pic.lab}" if pic.lab else "lab"
    if pic.network:
        title += f"  {pic.network}" + (f"  host {pic.gateway}" if pic.gateway else "")
    out = ["digraph lab {",
           f"  label={_dq(title)}; labelloc=t; fontname=\"Helvetica\"; rankdir=LR;",
           '  node [fontname="Helvetica", fontsize=10, shape=box, style="rounded,filled", fillcolor="#ffffff"];',
           '  edge [fontname="Helvetica", fontsize=9];']
    pods = {(p.namespace, p.name) for p in pic.pods}
    node_names = {n.name for n in pic.nodes}
    node_by_ip = {ip: n.name for n in pic.nodes for ip in (n.ip, n.ip6) if ip}
    # services (left)
    out.append('  subgraph cluster_services { label="services"; style="dashed"; color="#888888";')
    for s in pic.services:
        color = {"NodePort": "#dbeafe", "LoadBalancer": "#fde68a", "ExternalName": "#eeeeee"}.get(s.type, "#e0f2fe")
        out.append(f"    {_id('svc', s.namespace, s.name)} [label={_dq(_svc_label(s))}, shape=box, "
                   f"style=\"filled\", fillcolor=\"{color}\"];")
    out.append("  }")
    # workloads (middle)
    for i, g in enumerate(pic.groups):
        out.append(f"  subgraph cluster_g{i} {{ label={_dq(g.title)}; style=\"rounded,filled\"; fillcolor=\"#f0fdf4\"; "
                   "color=\"#16a34a\";")
        if not g.pods:
            out.append(f"    {_id('empty', g.key)} [label=\"no pods\", shape=plaintext, style=\"\"];")
        for p in g.pods:
            fill = "#e5e7eb" if p.terminating else ("#bbf7d0" if p.ready else "#fecaca")
            out.append(f"    {_id('pod', p.namespace, p.name)} [label={_dq(_pod_label(p))}, fillcolor=\"{fill}\"];")
        out.append("  }")
    # nodes on the lab segment (right)
    out.append(f"  subgraph cluster_segment {{ label={_dq('lab segment ' + pic.network if pic.network else 'nodes')}; "
               "style=\"filled\"; fillcolor=\"#f5f5f4\"; color=\"#78716c\";")
    for n in pic.nodes:
        fill = "#e7e5e4" if n.ready else "#fecaca"
        out.append(f"    {_id('node', n.name)} [label={_dq(_node_label(n))}, shape=box3d, style=\"filled\", "
                   f"fillcolor=\"{fill}\"];")
    out.append("  }")
    # LoadBalancer IPs
    for s in pic.services:
        for ip in s.lb_ips:
            out.append(f"  {_id('lb', ip)} [label={_dq('LB ' + ip)}, shape=ellipse, style=\"filled\", "
                       "fillcolor=\"#fef3c7\"];")
            out.append(f"  {_id('lb', ip)} -> {_id('svc', s.namespace, s.name)} [color=\"#b45309\"];")
            node = pic.announcers.get(ip)
            if node:
                if node not in node_names:
                    out.append(f"  {_id('node', node)} [label={_dq('node ' + node)}, shape=box3d];")
                    node_names.add(node)
                out.append(f"  {_id('node', node)} -> {_id('lb', ip)} [label=\"announces (ARP)\", style=dashed, "
                           "color=\"#b45309\", constraint=false];")
    # service -> endpoints
    for s in pic.services:
        for ep in s.endpoints:
            style = "solid" if ep.ready else "dashed"
            color = "#2563eb" if ep.ready else "#dc2626"
            label = _host_port(ep.address, ep.port) if ep.port else ep.address
            if ep.pod and ep.pod in pods:
                target = _id("pod", *ep.pod)
            elif ep.address in node_by_ip:  # a host-network endpoint (the API server on the control plane)
                target = _id("node", node_by_ip[ep.address])
            else:
                target = _id("addr", ep.address)
                out.append(f"  {target} [label={_dq(ep.address + (chr(10) + ep.pod[1] if ep.pod else ''))}, "
                           "shape=note];")
            out.append(f"  {_id('svc', s.namespace, s.name)} -> {target} [label={_dq(label)}, style={style}, "
                       f"color=\"{color}\"];")
    # pod -> node it runs on
    for p in pic.pods:
        if p.node:
            if p.node not in node_names:
                out.append(f"  {_id('node', p.node)} [label={_dq('node ' + p.node)}, shape=box3d];")
                node_names.add(p.node)
            out.append(f"  {_id('pod', p.namespace, p.name)} -> {_id('node', p.node)} [style=dotted, arrowhead=none, "
                       "color=\"#a8a29e\"];")
    out.append("}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- Mermaid
_MERMAID_ID = re.compile(r"[^A-Za-z0-9_]")


class _Ids:
    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def __call__(self, *parts: str) -> str:
        key = ":".join(parts)
        if key not in self.ids:
            base = _MERMAID_ID.sub("_", key)[:40]
            self.ids[key] = f"n{len(self.ids)}_{base}"
        return self.ids[key]


def _mq(text: str) -> str:
    """A Mermaid label: quoted, lines as <br/>, quotes as entities."""
    return '"' + text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;") \
        .replace("\n", "<br/>") + '"'


def to_mermaid(pic: Picture) -> str:
    ids = _Ids()
    out = ["flowchart LR"]
    if pic.lab:
        out.append(f"  %% lab {pic.lab} {pic.network}".rstrip())
    pods = {(p.namespace, p.name) for p in pic.pods}
    node_names = {n.name for n in pic.nodes}
    node_by_ip = {ip: n.name for n in pic.nodes for ip in (n.ip, n.ip6) if ip}
    out.append(f"  subgraph {ids('cluster', 'services')}[{_mq('services')}]")
    for s in pic.services:
        out.append(f"    {ids('svc', s.namespace, s.name)}[{_mq(_svc_label(s))}]")
    out.append("  end")
    for g in pic.groups:
        out.append(f"  subgraph {ids('group', g.key)}[{_mq(g.title)}]")
        if not g.pods:
            out.append(f"    {ids('empty', g.key)}[{_mq('no pods')}]")
        for p in g.pods:
            out.append(f"    {ids('pod', p.namespace, p.name)}([{_mq(_pod_label(p))}])")
        out.append("  end")
    out.append(f"  subgraph {ids('cluster', 'segment')}[{_mq('lab segment ' + pic.network if pic.network else 'nodes')}]")
    for n in pic.nodes:
        out.append(f"    {ids('node', n.name)}[/{_mq(_node_label(n))}/]")
    out.append("  end")
    links: list[str] = []   # linkStyle needs each edge's index

    def edge(a: str, b: str, label: str = "", dotted: bool = False, style: str = "") -> None:
        arrow = "-.->" if dotted else "-->"
        lab = f"|{_mq(label)}|" if label else ""
        out.append(f"  {a} {arrow}{lab} {b}")
        links.append(style)

    for s in pic.services:
        for ip in s.lb_ips:
            out.append(f"  {ids('lb', ip)}(({_mq('LB ' + ip)}))")
            edge(ids("lb", ip), ids("svc", s.namespace, s.name))
            node = pic.announcers.get(ip)
            if node:
                if node not in node_names:
                    out.append(f"  {ids('node', node)}[/{_mq('node ' + node)}/]")
                    node_names.add(node)
                edge(ids("node", node), ids("lb", ip), "announces (ARP)", dotted=True, style="stroke:#b45309")
    for s in pic.services:
        for ep in s.endpoints:
            if ep.pod and ep.pod in pods:
                target = ids("pod", *ep.pod)
            elif ep.address in node_by_ip:
                target = ids("node", node_by_ip[ep.address])
            else:
                target = ids("addr", ep.address)
                out.append(f"  {target}>{_mq(ep.address)}]")
            label = _host_port(ep.address, ep.port) if ep.port else ep.address
            edge(ids("svc", s.namespace, s.name), target, label, dotted=not ep.ready,
                 style="" if ep.ready else "stroke:#dc2626")
    for p in pic.pods:
        if p.node:
            if p.node not in node_names:
                out.append(f"  {ids('node', p.node)}[/{_mq('node ' + p.node)}/]")
                node_names.add(p.node)
            edge(ids("pod", p.namespace, p.name), ids("node", p.node), dotted=True, style="stroke:#a8a29e")
    for i, style in enumerate(links):
        if style:
            out.append(f"  linkStyle {i} {style}")
    return "\n".join(out) + "\n"
