"""The lab: real nodes and pods, kubectl-like verbs, failure injection and clean teardown."""
from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time

from conftest import NP_PODS, netemu
from netemu.procutil import alive

HNAME = NP_PODS  # .format(replicas=N)


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _procs_with(word: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", word], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line and "pytest" not in line]


def test_lab_nodes_pods_and_traffic(lab, tmp_path):
    lab.up(HNAME.format(replicas=3), tmp_path=tmp_path)
    nodes = {n["metadata"]["name"]: n for n in lab.get("nodes")}
    assert set(nodes) == set(lab.node_ips)
    for name, node in nodes.items():
        addrs = {a["type"]: a["address"] for a in node["status"]["addresses"]}
        assert addrs["InternalIP"] == lab.node_ips[name]
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    pods = lab.pods()
    assert len(pods) == 3
    for p in pods:
        assert p["status"]["phase"] == "Running"
        assert p["metadata"]["name"].startswith("np-pods-")
        node = nodes[p["spec"]["nodeName"]]
        assert ipaddress.ip_address(p["status"]["podIP"]) in ipaddress.ip_network(node["spec"]["podCIDR"])
        # the control plane is tainted: user pods never land there
        assert p["spec"]["nodeName"] != "m-k8s"
    # spread over the three workers
    assert len({p["spec"]["nodeName"] for p in pods}) == 3

    a, b = pods[0], pods[1]
    assert lab.exec(a["metadata"]["name"], "hostname").stdout.strip() == a["metadata"]["name"]
    # pod to pod across nodes answers with the other pod's name
    out = lab.exec(a["metadata"]["name"], "curl", "-s", "-m", "3", b["status"]["podIP"]).stdout
    assert out.strip() == b["metadata"]["name"]
    # the pod's resolver points at cluster DNS
    resolv = lab.exec(a["metadata"]["name"], "cat", "/etc/resolv.conf").stdout
    assert f"nameserver {lab.dns_ip}" in resolv and "ndots:5" in resolv
    # no route out of the lab from a node
    routes = lab.node_exec("w1-k8s", "ip", "route").stdout
    assert "default" not in routes

    # table output looks like kubectl's
    table = lab.run("get", "pods", "-o", "wide").stdout.splitlines()
    assert table[0].split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert all("Running" in line for line in table[1:]) and len(table) == 4


def test_scale_delete_and_logs(lab, tmp_path):
    lab.up(HNAME.format(replicas=1), tmp_path=tmp_path)
    lab.run("scale", "deployment", "np-pods", "--replicas=4")
    out = lab.run("rollout", "status", "deployment/np-pods").stdout
    assert "successfully rolled out" in out
    pods = lab.pods()
    assert len(pods) == 4 and all(p["status"]["phase"] == "Running" for p in pods)

    victim = pods[0]
    # a curl leaves a line in the pod's log
    lab.exec(pods[1]["metadata"]["name"], "curl", "-s", "-m", "3", victim["status"]["podIP"])
    logs = lab.run("logs", victim["metadata"]["name"]).stdout
    assert "GET /" in logs

    lab.run("delete", "pod", victim["metadata"]["name"])

    def replaced():
        now = lab.pods()
        names = {p["metadata"]["name"] for p in now}
        ready = [p for p in now if p["status"].get("phase") == "Running"]
        return len(now) == 4 and victim["metadata"]["name"] not in names and len(ready) == 4 and now
    now = lab.wait_for(replaced, what="a replacement pod")
    new = [p for p in now if p["metadata"]["name"] not in {q["metadata"]["name"] for q in pods}]
    assert len(new) == 1
    assert new[0]["status"]["podIP"] != victim["status"]["podIP"]
    # the deleted pod's namespace is gone
    assert subprocess.run(["ip", "netns", "pids", lab.pod_netns(victim['metadata']['name'])],
                          capture_output=True).returncode != 0

    lab.run("scale", "deployment", "np-pods", "--replicas=2")
    lab.wait_for(lambda: len(lab.pods()) == 2 and len(lab.get("pods")) == 2, what="scale down to 2")


def test_drain_and_uncordon(lab, tmp_path):
    lab.up(HNAME.format(replicas=3), tmp_path=tmp_path)
    # as kubectl: kube-proxy's DaemonSet pod stops the drain unless it is to be ignored (the node stays cordoned)
    refused = lab.run("drain", "w3-k8s", check=False)
    assert refused.returncode == 1 and refused.stdout.strip() == "node/w3-k8s cordoned"
    assert "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): kube-system/kube-proxy-" \
        in refused.stderr
    on_w3 = [p["metadata"]["name"] for p in lab.pods() if p["spec"]["nodeName"] == "w3-k8s"]
    res = lab.run("drain", "w3-k8s", "--ignore-daemonsets")
    out = res.stdout.splitlines()
    assert out[0] == "node/w3-k8s already cordoned" and out[-1] == "node/w3-k8s drained"
    assert sorted(out[1:-1]) == sorted(f"pod/{name} evicted" for name in on_w3)
    assert "Warning: ignoring DaemonSet-managed Pods: kube-system/kube-proxy-" in res.stderr
    assert all(f"evicting pod default/{name}" in res.stderr for name in on_w3)
    pods = lab.pods()
    assert len(pods) == 3
    assert all(p["spec"]["nodeName"] in ("w1-k8s", "w2-k8s") for p in pods)
    node = lab.get("nodes", "w3-k8s")[0]
    assert node["spec"]["unschedulable"] is True
    lab.run("uncordon", "w3-k8s")
    lab.run("scale", "deployment", "np-pods", "--replicas=6")
    lab.run("rollout", "status", "deployment/np-pods")
    assert any(p["spec"]["nodeName"] == "w3-k8s" for p in lab.pods())


WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: sysnet4admin/echo-hname
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
"""


def test_apply_and_delete_honour_the_namespace_flag(lab, tmp_path):
    lab.up(HNAME.format(replicas=1), tmp_path=tmp_path)
    app = tmp_path / "web.yaml"
    app.write_text(WEB)
    # -n names a namespace that does not exist: the API says so and nothing is made anywhere
    res = lab.run("apply", "-n", "other", "-f", str(app), check=False)
    assert res.returncode == 1 and 'Error from server (NotFound): namespaces "other" not found' in res.stderr
    assert "web" not in {d["metadata"]["name"] for d in lab.get("deployments", "-A")}
    ns = tmp_path / "ns.yaml"
    ns.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n")
    assert lab.run("apply", "-f", str(ns)).stdout.splitlines() == ["namespace/other created"]
    assert lab.run("apply", "-n", "other", "-f", str(app)).stdout.splitlines() == [
        "deployment.apps/web created", "service/web created"]
    assert [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in lab.get("deployments", "-A")
            if d["metadata"]["name"] == "web"] == [("other", "web")]
    assert lab.get("svc", "web", "-n", "other")[0]["metadata"]["namespace"] == "other"
    lab.wait_for(lambda: [p for p in lab.get("pods", "-n", "other", "-l", "app=web")
                          if p["status"].get("phase") == "Running"], what="web's pod in namespace other")
    # again: nothing to change
    assert lab.run("apply", "-n", "other", "-f", str(app)).stdout.splitlines() == [
        "deployment.apps/web unchanged", "service/web unchanged"]
    # an object that names another namespace than -n is refused, as kubectl refuses it
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  namespace: default\ndata: {a: b}\n")
    res = lab.run("apply", "-n", "other", "-f", str(elsewhere), check=False)
    assert res.returncode == 1
    assert 'the namespace from the provided object "default" does not match the namespace "other"' in res.stderr
    assert not [c for c in lab.get("configmaps", "-A") if c["metadata"]["name"] == "cm"]
    # delete -f without -n looks in default; with -n other it deletes there
    res = lab.run("delete", "-f", str(app), check=False)
    assert res.returncode == 1 and 'deployments.apps "web" not found' in res.stderr
    assert lab.run("delete", "-n", "other", "-f", str(app)).stdout.splitlines() == [
        'deployment.apps "web" deleted', 'service "web" deleted']
    assert not lab.get("deployments", "-n", "other") and not lab.get("svc", "-n", "other")


def test_node_down_reschedules(lab, tmp_path):
    lab.up(HNAME.format(replicas=3), tmp_path=tmp_path)
    before = {p["metadata"]["name"]: p for p in lab.pods()}
    on_w2 = [n for n, p in before.items() if p["spec"]["nodeName"] == "w2-k8s"]
    assert on_w2
    lab.run("node", "down", "w2-k8s")
    node = lab.get("nodes", "w2-k8s")[0]
    assert not any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    # the node's cable is cut: its pods are unreachable from the others
    other = next(p for p in before.values() if p["spec"]["nodeName"] != "w2-k8s")
    res = lab.exec(other["metadata"]["name"], "curl", "-s", "-m", "1", before[on_w2[0]]["status"]["podIP"],
                   check=False)
    assert res.stdout.strip() != on_w2[0]

    def moved():
        live = [p for p in lab.pods() if p["status"].get("phase") == "Running"
                and p["spec"]["nodeName"] != "w2-k8s"]
        return len(live) == 3 and live
    live = lab.wait_for(moved, timeout=30, what="pods to move off the failed node")
    newcomer = next(p for p in live if p["metadata"]["name"] not in before)
    out = lab.exec(other["metadata"]["name"], "curl", "-s", "-m", "3", newcomer["status"]["podIP"]).stdout
    assert out.strip() == newcomer["metadata"]["name"]

    lab.run("node", "up", "w2-k8s")
    # the old pods, stuck Terminating while the node was away, are cleaned up when it returns
    lab.wait_for(lambda: all(n not in {p["metadata"]["name"] for p in lab.get("pods")} for n in on_w2),
                 what="old pods to go once the node is back")
    assert lab.wait_for(lambda: any(c["type"] == "Ready" and c["status"] == "True"
                                    for c in lab.get("nodes", "w2-k8s")[0]["status"]["conditions"]))


def test_two_labs_side_by_side_and_overlap_refused(make_lab, tmp_path):
    a, b = make_lab(), make_lab()
    a.up(HNAME.format(replicas=1), tmp_path=tmp_path)
    b.up(HNAME.format(replicas=1), tmp_path=tmp_path)
    pa, pb = a.pods()[0], b.pods()[0]
    assert a.exec(pa["metadata"]["name"], "hostname").stdout.strip() == pa["metadata"]["name"]
    assert b.exec(pb["metadata"]["name"], "hostname").stdout.strip() == pb["metadata"]["name"]
    labs = netemu("labs").stdout
    assert a.name in labs and b.name in labs
    # a third lab on a's network is refused, and builds nothing
    c = make_lab()
    c.network, c.node_ips, c.gateway = a.network, a.node_ips, a.gateway
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    res = c.up(HNAME.format(replicas=1), tmp_path=tmp_path, check=False)
    assert res.returncode != 0
    assert "already in use" in res.stderr and a.network in res.stderr
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    assert after == before


def test_bad_file_builds_nothing(lab, tmp_path):
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    bad = HNAME.format(replicas=-1)
    res = lab.up(bad, tmp_path=tmp_path, check=False)
    assert res.returncode != 0
    assert f"{lab.name}.yaml" in res.stderr
    assert "document 2" in res.stderr and "replicas" in res.stderr
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    assert after == before
    assert not os.path.exists(f"/run/netemu/{lab.name}")


def test_down_after_sigkill_leaves_nothing(lab, tmp_path):
    links_before = _links()
    lab.up(HNAME.format(replicas=3), tmp_path=tmp_path)
    pid = int(open(f"/run/netemu/{lab.name}/daemon.pid").read())
    pods = lab.pods()
    pod_pids = [int(x) for p in pods for x in
                subprocess.run(["ip", "netns", "pids", lab.pod_netns(p['metadata']['name'])],
                               capture_output=True, text=True).stdout.split()]
    assert pod_pids
    # a crash for good: the lab's supervisor goes too (a crash alone is restarted: test_recovery.py)
    os.kill(int(open(f"/run/netemu/{lab.name}/supervisor.pid").read()), signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    res = lab.run("get", "pods", check=False)
    assert res.returncode != 0 and "down" in res.stderr  # tells the user how to clean up
    out = netemu("down", lab.name).stdout
    assert "down" in out
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith(f"ne-{lab.name}")]
    # only this lab's links count: other people's labs may come and go on the host meanwhile
    assert {n for n in _links() - links_before if n.startswith(f"ne-{lab.name}")} == set()
    for p in pod_pids:
        assert not alive(p), f"pod process {p} survived"
    assert not os.path.exists(f"/run/netemu/{lab.name}")
    assert not any(os.path.exists(f"/sys/fs/cgroup/{c}/netemu/{lab.name}") for c in ("pids", "cpu", "memory"))
    assert not os.path.exists(f"/sys/fs/cgroup/netemu/{lab.name}")
    assert not [d for d in (os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else [])
                if d.startswith(f"ne-{lab.name}")]


def test_sigkill_during_up_then_down(lab, tmp_path):
    """Kill the control process while it is still building pods: down still cleans up."""
    path = tmp_path / "big.yaml"
    path.write_text(lab.lab_doc() + "---\n" + HNAME.format(replicas=60))
    proc = subprocess.Popen([sys.executable, "-m", "netemu", "up", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pidfile = f"/run/netemu/{lab.name}/daemon.pid"
    deadline = time.time() + 20
    while time.time() < deadline:
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        if os.path.exists(pidfile) and netns.count(lab.pod_netns("np-pods")) >= 5:
            break
        time.sleep(0.02)
    # a crash for good: the lab's supervisor goes too (a crash alone is restarted: test_recovery.py)
    os.kill(int(open(f"/run/netemu/{lab.name}/supervisor.pid").read()), signal.SIGKILL)
    os.kill(int(open(pidfile).read()), signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    netemu("down", lab.name)
    left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
            if n.startswith(f"ne-{lab.name}")]
    assert not left
    assert not os.path.exists(f"/run/netemu/{lab.name}")


def test_crashing_container_is_restarted(lab, tmp_path):
    manifest = """\
apiVersion: v1
kind: Pod
metadata:
  name: crasher
spec:
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo started; sleep 0.3; exit 3"]
---
apiVersion: v1
kind: Pod
metadata:
  name: sleeper
  labels: {app: sleeper}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo hello from $HOSTNAME; exec sleep 3600"]
"""
    lab.up(manifest, tmp_path=tmp_path, extra_args=("--no-wait",))

    def restarted():
        p = lab.get("pods", "crasher")[0]
        cs = (p["status"].get("containerStatuses") or [{}])[0]
        return cs.get("restartCount", 0) >= 2 and cs
    cs = lab.wait_for(restarted, timeout=20, what="crasher to be restarted twice")
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    assert "started" in lab.run("logs", "crasher").stdout
    lab.wait_for(lambda: "hello from sleeper" in lab.run("logs", "sleeper").stdout, what="sleeper's log")
    table = lab.run("get", "pods").stdout
    assert "crasher" in table and "sleeper" in table


def test_network_already_routed_on_the_host_is_refused(lab, tmp_path):
    """A lab whose network the host already reaches some other way must not start."""
    link = f"ne-tc{lab.name[-6:]}"[:15]
    # a veth pair (this kernel has no dummy links), both ends in the root namespace, no traffic
    subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", f"{link}p"],
                   check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{lab.gateway.rsplit('.', 1)[0]}.77/24", "dev", link], check=True)
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
        res = lab.up(HNAME.format(replicas=1), tmp_path=tmp_path, check=False)
        assert res.returncode != 0
        assert "already in use on this host" in res.stderr and link in res.stderr
        assert not os.path.exists(f"/run/netemu/{lab.name}")
    finally:
        subprocess.run(["ip", "link", "del", link])


def test_check_route_guards_the_host(lab, tmp_path):
    res = netemu("check-route", lab.node_ips["w1-k8s"], check=False)
    assert res.returncode != 0  # no lab yet: the address would leave through the default route
    lab.up(HNAME.format(replicas=1), tmp_path=tmp_path)
    res = netemu("check-route", lab.node_ips["w1-k8s"], "--lab", lab.name)
    assert f"ne-{lab.name}" in res.stdout
