"""The lab's picture (cli/graph.py): every pod and service named, pods grouped by deployment,
endpoints and LB announcers drawn; valid DOT (checked by graphviz when installed) and Mermaid."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from netemu.cli import graph


def node(name, ip, cidr, control=False, ready=True):
    labels = {"kubernetes.io/hostname": name}
    if control:
        labels["node-role.kubernetes.io/control-plane"] = ""
    return {"kind": "Node", "metadata": {"name": name, "labels": labels},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "Unknown"}]}}


def pod(name, ip, node_name, owner=None, ns="default", ready=True, labels=None, deleting=False):
    meta = {"name": name, "namespace": ns, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {"kind": "Pod", "metadata": meta, "spec": {"nodeName": node_name},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def service(name, type_="ClusterIP", ip="10.96.0.20", ports=None, ns="default", lb=None, annotations=None, **spec):
    s = {"kind": "Service", "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
         "spec": {"type": type_, "clusterIP": ip, "ports": ports or [{"port": 80, "targetPort": 80, "protocol": "TCP"}],
                  **spec},
         "status": {"loadBalancer": {"ingress": [{"ip": i} for i in lb or []]}}}
    return s


def eslice(svc, eps, port=80, ns="default"):
    return {"kind": "EndpointSlice", "metadata": {"name": f"{svc}-abcde", "namespace": ns,
                                                   "labels": {"kubernetes.io/service-name": svc}},
            "ports": [{"port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready},
                           "targetRef": {"kind": "Pod", "name": p, "namespace": ns} if p else None,
                           "nodeName": n} for ip, p, n, ready in eps]}


@pytest.fixture
def objects():
    nodes = [node("m-k8s", "192.168.1.10", "172.16.0.0/24", control=True), node("w1-k8s", "192.168.1.101", "172.16.1.0/24"),
             node("w2-k8s", "192.168.1.102", "172.16.2.0/24"), node("w3-k8s", "192.168.1.103", "172.16.3.0/24", ready=False)]
    pods = [
        pod("np-pods-5d8f7c9b4-aaaaa", "172.16.1.2", "w1-k8s", ("ReplicaSet", "np-pods-5d8f7c9b4"),
            labels={"app": "np-pods", "pod-template-hash": "5d8f7c9b4"}),
        pod("np-pods-5d8f7c9b4-bbbbb", "172.16.2.2", "w2-k8s", ("ReplicaSet", "np-pods-5d8f7c9b4"),
            labels={"app": "np-pods", "pod-template-hash": "5d8f7c9b4"}, ready=False),
        pod("np-pods-5d8f7c9b4-ccccc", "172.16.3.2", "w3-k8s", ("ReplicaSet", "np-pods-5d8f7c9b4"),
            labels={"app": "np-pods", "pod-template-hash": "5d8f7c9b4"}, deleting=True),
        # its ReplicaSet is not listed: the pod-template-hash names the deployment
        pod("lb-pods-7c9b4d8f5-ddddd", "172.16.1.3", "w1-k8s", ("ReplicaSet", "lb-pods-7c9b4d8f5"),
            labels={"app": "lb-pods", "pod-template-hash": "7c9b4d8f5"}),
        pod("redis", "172.16.2.3", "w2-k8s"),
        pod("coredns-6dd4bf9f65-eeeee", "172.16.0.2", "m-k8s", ("ReplicaSet", "coredns-6dd4bf9f65"), ns="kube-system"),
    ]
    rss = [{"kind": "ReplicaSet", "metadata": {"name": "np-pods-5d8f7c9b4", "namespace": "default",
                                               "ownerReferences": [{"kind": "Deployment", "name": "np-pods",
                                                                    "controller": True}]}},
           {"kind": "ReplicaSet", "metadata": {"name": "coredns-6dd4bf9f65", "namespace": "kube-system",
                                               "ownerReferences": [{"kind": "Deployment", "name": "coredns",
                                                                    "controller": True}]}}]
    deps = [{"kind": "Deployment", "metadata": {"name": n, "namespace": ns}, "spec": {"replicas": r},
             "status": {"readyReplicas": rr}}
            for n, ns, r, rr in (("np-pods", "default", 3, 1), ("lb-pods", "default", 1, 1),
                                 ("coredns", "kube-system", 1, 1), ("scaled-down", "default", 0, 0))]
    svcs = [
        service("np-svc", "NodePort", "10.96.0.20", [{"name": "http", "port": 80, "targetPort": 80, "nodePort": 30000,
                                                      "protocol": "TCP"}]),
        service("lb-svc", "LoadBalancer", "10.96.0.30", [{"port": 80, "targetPort": 8080, "nodePort": 31234}],
                lb=["192.168.1.11"]),
        service("lb-ann", "LoadBalancer", "10.96.0.31", lb=["192.168.1.12"],
                annotations={graph.ANNOUNCER_ANNOTATION: "w2-k8s"}),
        service("lb-ev", "LoadBalancer", "10.96.0.32", lb=["192.168.1.13"]),
        service("kubernetes", "ClusterIP", "10.96.0.1", [{"name": "https", "port": 443, "targetPort": 6443}]),
        service("ext", "ExternalName", "", externalName="example.com"),
        service("kube-dns", "ClusterIP", "10.96.0.10", [{"name": "dns", "port": 53, "protocol": "UDP"}], ns="kube-system"),
        service('odd"name\\x', "ClusterIP", "10.96.0.40"),  # escaping (not a valid k8s name, but labels can be odd)
    ]
    slices = [
        eslice("np-svc", [("172.16.1.2", "np-pods-5d8f7c9b4-aaaaa", "w1-k8s", True),
                          ("172.16.2.2", "np-pods-5d8f7c9b4-bbbbb", "w2-k8s", False)]),
        eslice("lb-svc", [("172.16.1.3", "lb-pods-7c9b4d8f5-ddddd", "w1-k8s", True)], port=8080),
        eslice("kubernetes", [("192.168.1.10", None, "", True)], port=6443),
        eslice("kube-dns", [("172.16.0.2", "coredns-6dd4bf9f65-eeeee", "m-k8s", True)], port=53, ns="kube-system"),
        eslice("lb-ev", [("10.1.2.3", None, "", True)]),  # an address that is no pod
    ]
    return {"Node": nodes, "Pod": pods, "ReplicaSet": rss, "Deployment": deps, "Service": svcs,
            "EndpointSlice": slices}


EVENTS = [
    {"kind": "Service", "namespace": "default", "name": "lb-ev", "reason": "nodeAssigned",
     "message": 'announcing from node "w1-k8s" with protocol "layer2"', "last": 10.0},
    {"kind": "Service", "namespace": "default", "name": "lb-ev", "reason": "nodeAssigned",
     "message": 'announcing from node "w3-k8s" with protocol "layer2"', "last": 20.0},
    {"kind": "Pod", "namespace": "default", "name": "x", "reason": "Started", "message": "", "last": 30.0},
]
LAB = {"metadata": {"name": "lab"}, "spec": {"network": "192.168.1.0/24", "gateway": "192.168.1.1"}}


@pytest.fixture
def pic(objects):
    return graph.build(objects, announcers={"192.168.1.11": "w1-k8s"}, events=EVENTS, lab=LAB)


def test_groups_and_announcers(pic, objects):
    groups = {g.title: [p.name for p in g.pods] for g in pic.groups}
    assert groups["deployment np-pods (1/3)"] == ["np-pods-5d8f7c9b4-aaaaa", "np-pods-5d8f7c9b4-bbbbb",
                                                  "np-pods-5d8f7c9b4-ccccc"]
    assert groups["deployment lb-pods (1/1)"] == ["lb-pods-7c9b4d8f5-ddddd"]
    assert groups["deployment kube-system/coredns (1/1)"] == ["coredns-6dd4bf9f65-eeeee"]
    assert groups["deployment scaled-down (0/0)"] == []
    assert groups["pods"] == ["redis"]
    # mapping first, then the annotation, then MetalLB's latest nodeAssigned event
    assert pic.announcers == {"192.168.1.11": "w1-k8s", "192.168.1.12": "w2-k8s", "192.168.1.13": "w3-k8s"}
    np = next(s for s in pic.services if s.name == "np-svc")
    assert [(e.address, e.ready, e.pod) for e in np.endpoints] == [
        ("172.16.1.2", True, ("default", "np-pods-5d8f7c9b4-aaaaa")),
        ("172.16.2.2", False, ("default", "np-pods-5d8f7c9b4-bbbbb"))]
    assert np.node_ports == [30000] and "http 80->80/TCP nodePort 30000" in np.ports


def test_namespace_filter(objects):
    pic = graph.build(objects, namespace="kube-system")
    assert [p.name for p in pic.pods] == ["coredns-6dd4bf9f65-eeeee"]
    assert [s.name for s in pic.services] == ["kube-dns"]
    assert len(pic.nodes) == 4


def _all_names(objects):
    return ([p["metadata"]["name"] for p in objects["Pod"]], [s["metadata"]["name"] for s in objects["Service"]])


def test_dot_names_everything(pic, objects):
    dot = graph.to_dot(pic)
    pods, svcs = _all_names(objects)
    for name in pods:
        assert name in dot, name
    for name in svcs:
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        assert escaped in dot, name
    for n in ("m-k8s", "w1-k8s", "192.168.1.103", "LB 192.168.1.11", "announces (ARP)", "example.com"):
        assert n in dot
    # the announcing node points at its LB IP; the LB IP at its service
    assert '"node:w1-k8s" -> "lb:192.168.1.11"' in dot
    assert '"lb:192.168.1.11" -> "svc:default:lb-svc"' in dot
    # an endpoint on a node's address (the API server) goes to the node
    assert '"svc:default:kubernetes" -> "node:m-k8s"' in dot
    assert dot.count("subgraph cluster_g") == len(pic.groups)
    assert dot.count("{") == dot.count("}")


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is not installed (apt-get install graphviz)")
def test_dot_is_valid_for_graphviz(pic):
    res = subprocess.run(["dot", "-Tsvg"], input=graph.to_dot(pic), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "", res.stderr
    import html

    assert "<svg" in res.stdout and "np-pods-5d8f7c9b4-aaaaa" in html.unescape(res.stdout)


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is not installed (apt-get install graphviz)")
def test_cli_renders_svg_and_png(pic):
    from netemu.cli import graph_cmds

    assert graph_cmds.render(pic, "svg").lstrip().startswith(b"<?xml")
    assert graph_cmds.render(pic, "png").startswith(b"\x89PNG")


def test_cli_without_graphviz(pic, monkeypatch):
    from netemu.cli import graph_cmds
    from netemu.cli.client import CliError

    monkeypatch.setattr(graph_cmds.shutil, "which", lambda name: None)
    with pytest.raises(CliError, match="apt-get install graphviz"):
        graph_cmds.render(pic, "svg")
    assert graph_cmds.render(pic, "mermaid").startswith(b"flowchart LR\n  %% lab lab")


_MM_ID = r"[A-Za-z][A-Za-z0-9_]*"
_MM_LABEL = r'"[^"]*"'
_MM_NODE = re.compile(rf"^({_MM_ID})(\[{_MM_LABEL}\]|\(\[{_MM_LABEL}\]\)|\[/{_MM_LABEL}/\]|\(\({_MM_LABEL}\)\)"
                      rf"|>{_MM_LABEL}\])$")
_MM_EDGE = re.compile(rf"^({_MM_ID}) (-->|-\.->)(\|{_MM_LABEL}\|)? ({_MM_ID})$")
_MM_SUB = re.compile(rf"^subgraph ({_MM_ID})\[{_MM_LABEL}\]$")
_MM_STYLE = re.compile(r"^linkStyle (\d+) stroke:#[0-9a-f]{6}$")


def check_mermaid(text: str) -> dict:
    """A strict check of the Mermaid subset graph.py writes: one flowchart, balanced subgraphs,
    every edge between declared ids, linkStyle indexes in range, labels quoted without raw quotes."""
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("%%")]
    assert lines[0] == "flowchart LR", lines[0]
    declared, depth, edges, labels = set(), 0, 0, []
    for line in lines[1:]:
        if m := _MM_SUB.match(line):
            depth += 1
            declared.add(m.group(1))
        elif line == "end":
            depth -= 1
            assert depth >= 0, "end without subgraph"
        elif m := _MM_NODE.match(line):
            assert m.group(1) not in ("end", "subgraph", "graph", "flowchart")
            declared.add(m.group(1))
            labels.append(m.group(2))
        elif m := _MM_EDGE.match(line):
            assert m.group(1) in declared and m.group(4) in declared, line
            edges += 1
        elif m := _MM_STYLE.match(line):
            assert int(m.group(1)) < edges, line
        else:
            raise AssertionError(f"not valid in the flowchart subset: {line!r}")
    assert depth == 0, "unbalanced subgraphs"
    return {"ids": declared, "edges": edges, "labels": labels}


def test_mermaid_is_valid_and_names_everything(pic, objects):
    mm = graph.to_mermaid(pic)
    info = check_mermaid(mm)
    pods, svcs = _all_names(objects)
    for name in pods:
        assert name in mm, name
    for name in svcs:
        assert name.replace('"', "#quot;") in mm, name
    assert "announces (ARP)" in mm and "LB 192.168.1.11" in mm
    assert info["edges"] >= len(pods)


def test_escaping_in_dot_labels():
    assert graph._dq('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert graph._mq('a"b<c>\nd') == '"a#quot;b#lt;c#gt;<br/>d"'
