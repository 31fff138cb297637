"""An IPVS-mode node, for real, inside the throwaway VM.

On the host (fast): two Services and their EndpointSlice become a NodeProxyView; IpvsSyncer plans
the first sync of a fresh node and then an update (pod b starts terminating). Both plans are the
exact command lists netemu's IPVS applier runs (ip -batch, ipset restore, ipvsadm -R, sysctl,
iptables-restore), written into a guest script with the commands that build the namespaces.

In the guest (slow, so shell and C tools only): a node namespace with a bridge and two pod namespaces
serving their names with busybox httpd, a client namespace on the node's segment; the plans replayed
inside the node namespace; curls to the ClusterIP and the NodePort from the client, from a pod (to
itself too: hairpin), from the node; a host port through a VIP (KUBE-IPVS-FILTER must reject it);
ClientIP affinity; after the update, new connections only reach pod a and pod b is weighted 0. Then
netemu's applier itself (proxy.ipvs.apply.IpvsBackend, one Python process, views pickled on the host)
observes that kernel state and syncs two more views (pod b back; a new Service losing pod b, whose
real server its reaping deletes). The guest dumps what the kernel ended up with (ipvsadm-save, ipset
save, iptables-save, kube-ipvs0) so the host can compare it with what was rendered.

    sudo .venv/bin/python -m netemu.vmtest.ipvs_scenario [WORKDIR]     # run it by hand
"""
from __future__ import annotations

import pathlib
import pickle
import sys
from dataclasses import dataclass
from typing import Optional

from netemu.dataplane.proxy.ipvs.render import IpvsRuleset, IpvsSettings
from netemu.dataplane.proxy.ipvs.sync import IpvsSyncer, SyncPlan
from netemu.dataplane.proxy.view import NodeProxyView, build_view
from netemu.spec.models import EndpointSlice, Service
from netemu.wellknown import SERVICE_NAME_LABEL

NODE_NS, CLIENT_NS = "vt-node", "vt-client"
NODE_NAME = "w1-k8s"
NODE_IP, CLIENT_IP = "192.168.1.101", "192.168.1.1"
BRIDGE_IP, CLUSTER_CIDR = "172.16.1.1", "172.16.0.0/16"
PODS = (("vt-pod-a", "np-pods-a", "172.16.1.10"), ("vt-pod-b", "np-pods-b", "172.16.1.11"))
SVC_IP, STICKY_IP, SVC_PORT, NODE_PORT, TARGET_PORT = "10.96.0.50", "10.96.0.51", 80, 30080, 8080
EXTRA_IP = "10.96.0.52"
HOST_PORT = 9090   # a server of the node itself: must not answer through a VIP
GUEST_MODULES = ("br_netfilter",)   # loaded by the VM's init (nothing autoloads it)


def services() -> list[Service]:
    def svc(name, spec):
        return Service.model_validate({"metadata": {"namespace": "default", "name": name}, "spec": spec})
    port = {"name": "http", "port": SVC_PORT, "protocol": "TCP", "targetPort": TARGET_PORT}
    return [
        svc("np-svc", {"type": "NodePort", "clusterIP": SVC_IP, "ports": [{**port, "nodePort": NODE_PORT}]}),
        svc("sticky", {"clusterIP": STICKY_IP, "ports": [port], "sessionAffinity": "ClientIP",
                       "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}),
    ]


def slices(b_terminating: bool = False) -> list[EndpointSlice]:
    def endpoints():
        out = []
        for i, (_, pod, ip) in enumerate(PODS):
            cond = {"ready": True, "serving": True, "terminating": False}
            if b_terminating and i == 1:
                cond = {"ready": False, "serving": True, "terminating": True}
            out.append({"addresses": [ip], "nodeName": NODE_NAME, "conditions": cond,
                        "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}})
        return out
    return [EndpointSlice.model_validate({
        "metadata": {"namespace": "default", "name": f"{name}-abcde", "labels": {SERVICE_NAME_LABEL: name}},
        "addressType": "IPv4", "endpoints": endpoints(),
        "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}]}) for name in ("np-svc", "sticky")]


def view(b_terminating: bool = False) -> NodeProxyView:
    return build_view(services(), slices(b_terminating), node_name=NODE_NAME, node_ips=[NODE_IP],
                      cluster_cidr=CLUSTER_CIDR)


def backend_views() -> list[NodeProxyView]:
    """What IpvsBackend applies in the guest after the two replayed plans: pod b ready again plus a
    new Service "extra" on both pods, then "extra" without pod b (no connection: deleted at once)."""
    extra = Service.model_validate({"metadata": {"namespace": "default", "name": "extra"}, "spec": {
        "clusterIP": EXTRA_IP,
        "ports": [{"name": "http", "port": SVC_PORT, "protocol": "TCP", "targetPort": TARGET_PORT}]}})

    def extra_slice(pods):
        return EndpointSlice.model_validate({
            "metadata": {"namespace": "default", "name": "extra-abcde",
                         "labels": {SERVICE_NAME_LABEL: "extra"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "nodeName": NODE_NAME, "conditions": {"ready": True}}
                          for _, _, ip in pods]})
    return [build_view(services() + [extra], slices() + [extra_slice(p)], node_name=NODE_NAME, node_ips=[NODE_IP],
                       cluster_cidr=CLUSTER_CIDR) for p in (PODS, PODS[:1])]


BACKEND_SCRIPT = """# Runs INSIDE the VM: netemu's IPVS applier (IpvsBackend, as KubeProxy drives it) on the node.
import json, pickle, sys, time, types
t0 = time.monotonic()
from netemu.dataplane.proxy.ipvs.apply import IpvsBackend
out = {"import_seconds": time.monotonic() - t0, "applies": []}
views = pickle.load(open("backend-views.pkl", "rb"))
lab = types.SimpleNamespace(spec=types.SimpleNamespace(iptables_backend="nft", ipvs_scheduler="rr"))
backend = IpvsBackend(lab)
changed = None
for v in views:
    t = time.monotonic()
    full, lines = backend.apply(%(node)r, v, changed)
    out["applies"].append({"full": full, "lines": lines, "seconds": round(time.monotonic() - t, 2),
                           "graceful": sorted(str(g) for g in backend.syncer.graceful)})
    changed = {"default/extra"}
open("results/backend-rules.txt", "w").write(backend.rules(%(node)r))
json.dump(out, sys.stdout)
""" % {"node": NODE_NS}


@dataclass(frozen=True)
class Scenario:
    first: SyncPlan      # fresh node -> both pods serving
    update: SyncPlan     # pod b terminating
    ruleset: IpvsRuleset  # the first one

    @classmethod
    def plan(cls, kernel_release: Optional[str] = "6.1.0-56-amd64") -> "Scenario":
        # kube-proxy lists the node's addresses itself: the node IP and the bridge's
        syncer = IpvsSyncer(IpvsSettings(node_addresses=(NODE_IP, BRIDGE_IP)), kernel_release=kernel_release)
        first = syncer.sync(view())
        syncer.committed()
        update = syncer.sync(view(b_terminating=True))
        syncer.committed()
        assert first.ruleset is not None
        return cls(first, update, first.ruleset)


def _batch(ns: str, lines: list[str]) -> str:
    return f"ip -n {ns} -batch - <<'EOF'\n" + "\n".join(lines) + "\nEOF\n"


def guest_script(sc: Scenario, python: str = sys.executable) -> str:
    package = pathlib.Path(__file__).resolve().parents[1]  # the netemu package backend.py imports
    pod_setup = ""
    for ns, pod, ip in PODS:
        pod_setup += _batch(ns, ["link set lo up", f"address add {ip}/24 dev eth0", "link set eth0 up",
                                 f"route add default via {BRIDGE_IP}"])
        pod_setup += (f"mkdir -p /tmp/www-{ns} && echo {pod} > /tmp/www-{ns}/index.html\n"
                      f"in_ns {ns} busybox httpd -p {TARGET_PORT} -h /tmp/www-{ns}\n")
    node_lines = ["link set lo up",
                  f"link add eth0 type veth peer name eth0 netns {CLIENT_NS}",
                  f"address add {NODE_IP}/24 dev eth0", "link set eth0 up",
                  "link add cni0 type bridge", f"address add {BRIDGE_IP}/24 dev cni0", "link set cni0 up"]
    for i, (ns, _, _) in enumerate(PODS):
        # hairpin on, as the CNI bridge plugin (and netemu's lab) sets it: with br_netfilter, a pod's
        # connection to a Service that lands on the pod itself leaves through the port it came in
        node_lines += [f"link add veth{i} type veth peer name eth0 netns {ns}", f"link set veth{i} master cni0 up",
                       f"link set veth{i} type bridge_slave hairpin on"]
    all_ns = " ".join([CLIENT_NS, NODE_NS] + [p[0] for p in PODS])
    a, b = PODS[0][0], PODS[1][0]
    return f"""#!/bin/sh
# Generated by netemu.vmtest.ipvs_scenario: runs INSIDE the throwaway VM (cwd = the work dir).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
W=$(pwd); R=$W/results; rm -rf "$R"; mkdir -p "$R"
stamp() {{ echo "$1 $(cut -d' ' -f1 /proc/uptime)" >> "$R/times"; }}
in_ns() {{ n=$1; shift; nsenter --net=/run/netns/$n -- "$@"; }}
dump() {{
  in_ns {NODE_NS} ipvsadm-save -n > "$R/ipvsadm-$1.txt"
  in_ns {NODE_NS} ipvsadm -L -n > "$R/ipvsadm-list-$1.txt"
  in_ns {NODE_NS} ipset save > "$R/ipset-$1.txt"
  in_ns {NODE_NS} iptables-save > "$R/iptables-$1.txt"
  in_ns {NODE_NS} ip -o address show dev kube-ipvs0 > "$R/addr-$1.txt"
  in_ns {NODE_NS} ip -d link show dev kube-ipvs0 > "$R/link-$1.txt"
  in_ns {NODE_NS} sysctl {" ".join(k for k, _ in sc.ruleset.sysctls)} > "$R/sysctl-$1.txt"
}}
curls() {{  # NAME NETNS URL COUNT: one line "NAME: answer answer ..." (FAIL when curl fails)
  name=$1; ns=$2; url=$3; n=$4; out=""; i=0
  while [ $i -lt $n ]; do r=$(in_ns $ns curl -s -m 3 "$url" || echo FAIL); out="$out ${{r:-EMPTY}}"; i=$((i+1)); done
  echo "$name:$out" >> "$R/curls"
}}
stamp start
set -e
ip link set lo up
for ns in {all_ns}; do ip netns add $ns; done
{_batch(NODE_NS, node_lines)}{_batch(CLIENT_NS, ["link set lo up", f"address add {CLIENT_IP}/24 dev eth0",
                                                  "link set eth0 up", f"route add 10.96.0.0/12 via {NODE_IP}"])}{pod_setup}
# pod -> ClusterIP -> another pod of the same bridge: the reply is bridged, and only br_netfilter
# (a node prerequisite, as for every kube-proxy mode) lets IPVS un-NAT it (run_script loads the module)
in_ns {NODE_NS} sysctl -q -w net.bridge.bridge-nf-call-iptables=1
mkdir -p /tmp/www-node && echo node-host-port > /tmp/www-node/index.html
in_ns {NODE_NS} busybox httpd -p {HOST_PORT} -h /tmp/www-node
i=0
until in_ns {NODE_NS} curl -s -m 1 http://{PODS[0][2]}:{TARGET_PORT}/ >/dev/null &&
      in_ns {NODE_NS} curl -s -m 1 http://{PODS[1][2]}:{TARGET_PORT}/ >/dev/null; do
  i=$((i+1)); [ $i -lt 100 ] || {{ echo "pods' servers never answered"; exit 20; }}; sleep 0.2
done
stamp lab-built
# ---- first sync of a fresh node: exactly the steps netemu's IPVS applier runs
{sc.first.shell(NODE_NS)}stamp first-sync-applied
dump 1
set +e
curls clusterip-from-client {CLIENT_NS} http://{SVC_IP}/ 4
curls nodeport-from-client {CLIENT_NS} http://{NODE_IP}:{NODE_PORT}/ 4
curls affinity-from-client {CLIENT_NS} http://{STICKY_IP}/ 3
curls clusterip-from-pod-a {a} http://{SVC_IP}/ 4
curls clusterip-from-node {NODE_NS} http://{SVC_IP}/ 2
curls nodeport-on-bridge-from-pod-b {b} http://{BRIDGE_IP}:{NODE_PORT}/ 2
curls hostport-via-nodeip {CLIENT_NS} http://{NODE_IP}:{HOST_PORT}/ 1
curls hostport-via-vip {CLIENT_NS} http://{SVC_IP}:{HOST_PORT}/ 1
stamp first-checks
set -e
# ---- update: pod b terminating (weight 0 while it still has connections)
{sc.update.shell(NODE_NS)}stamp update-applied
dump 2
set +e
curls clusterip-after-update {CLIENT_NS} http://{SVC_IP}/ 3
curls nodeport-after-update {CLIENT_NS} http://{NODE_IP}:{NODE_PORT}/ 3
curls affinity-after-update {CLIENT_NS} http://{STICKY_IP}/ 2
stamp update-checks
# ---- netemu's applier itself, in one Python process (slow here: ~5 s to import)
if [ -x "{python}" ] && [ -f "{package}/__init__.py" ]; then
  "{python}" backend.py > "$R/backend.json" 2> "$R/backend.err"; echo $? > "$R/backend.rc"
  dump 3
  curls extra-after-backend {CLIENT_NS} http://{EXTRA_IP}/ 2
  curls clusterip-after-backend {CLIENT_NS} http://{SVC_IP}/ 4
else
  echo "{python} or {package} is not visible in the guest" > "$R/backend.skipped"
fi
stamp done
echo "--- curls"; cat "$R/curls"; echo "--- times"; cat "$R/times"
exit 0
"""


def write(workdir: pathlib.Path, sc: Optional[Scenario] = None, name: str = "guest.sh") -> Scenario:
    sc = sc or Scenario.plan()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / name).write_text(guest_script(sc))
    (workdir / "backend.py").write_text(BACKEND_SCRIPT)
    with open(workdir / "backend-views.pkl", "wb") as f:
        pickle.dump(backend_views(), f)
    (workdir / "expected-ipvsadm-1.txt").write_text(sc.ruleset.ipvsadm_restore())
    (workdir / "expected-ipset-1.txt").write_text(sc.ruleset.ipset_restore())
    (workdir / "expected-iptables-1.txt").write_text(sc.ruleset.iptables_restore())
    return sc


def read_curls(workdir: pathlib.Path) -> dict[str, list[str]]:
    out = {}
    path = workdir / "results" / "curls"
    for line in path.read_text().splitlines() if path.exists() else ():
        name, _, answers = line.partition(":")
        out[name] = answers.split()
    return out


def main(argv: list[str]) -> int:
    from netemu.vmtest.kit import ensure_kit, run_script

    workdir = pathlib.Path(argv[0] if argv else "/var/tmp/netemu-ipvs-vm").resolve()
    kit = ensure_kit()
    write(workdir, Scenario.plan(kit.kernel))
    run = run_script(kit, workdir, "guest.sh", modules=GUEST_MODULES)
    print(run.output)
    print(f"rc={run.rc} wall={run.seconds:.1f}s guest ready at {run.ready_at}s, done at {run.exit_at}s")
    for k, v in read_curls(workdir).items():
        print(f"{k}: {' '.join(v)}")
    return run.rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
