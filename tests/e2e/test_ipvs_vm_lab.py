"""A whole lab in IPVS mode, `netemu up --proxy-mode ipvs` and all, in a throwaway VM (root only).

This machine's kernel has no ip_vs, so the lab runs in the QEMU/TCG VM of netemu/vmtest (Debian's
kernel, the host's tree as the guest's root). Inside, the guest script brings up the seeds' lab with
MetalLB's pool in IPVS mode, curls the NodePort and the LoadBalancer IP from the lab's host side, a
ClusterIP from a pod, scales the deployment down, and takes the lab down; it writes what it saw to
files that the tests below read. Python runs several times slower under emulation: about a minute.
"""
from __future__ import annotations

import pathlib
import sys
import time

import pytest

from netemu.vmtest.kit import checkout_problem, run_script

pytestmark = pytest.mark.e2e

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB = "ipvsvmlab"
MODULES = ("br_netfilter", "ip_vs", "ip_set", "dummy")  # what `up` checks for before building anything

GUEST = """\
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp
R=$PWD/results; mkdir -p "$R"
if [ ! -x "{python}" ] || [ ! -f "{repo}/netemu/__init__.py" ]; then
  echo "{repo} or {python} is not visible in the guest" > "$R/not-visible"; exit 0
fi
N="{python} -m netemu"
# the guest's / is the host's, read-only: give /etc a writable copy (per-namespace resolv.conf in /etc/netns)
cp -a /etc /tmp/etc && mount --bind /tmp/etc /etc
ip link set lo up
$N up {repo}/topologies/seeds/metallb-config.yaml {repo}/topologies/lab.yaml --name {lab} --proxy-mode ipvs \\
   --timeout 150 > "$R/up.txt" 2>&1; echo $? > "$R/up.rc"
$N get pods -l app=np-pods -o name | sed 's|^pod/||' > "$R/pods.txt" 2>&1
$N expose deployment np-pods --type=LoadBalancer --name=np-lb --port=80 > "$R/expose.txt" 2>&1
sleep 2
for i in 1 2 3 4 5 6 7 8 9; do curl -s -m 5 192.168.1.101:30000; echo; done > "$R/nodeport.txt"
for i in 1 2 3 4 5 6; do curl -s -m 5 192.168.1.11; echo; done > "$R/lb.txt"
$N get svc np-lb -o wide > "$R/svc-lb.txt" 2>&1
CIP=$($N get svc np-svc | awk 'NR==2{{print $3}}')
P=$(head -1 "$R/pods.txt")
for i in 1 2 3 4 5 6; do $N exec "$P" -- curl -s -m 5 "$CIP"; echo; done > "$R/clusterip.txt" 2>&1
ip -n ne-{lab}_w1-k8s -o addr show kube-ipvs0 > "$R/kube-ipvs0.txt" 2>&1
ip netns exec ne-{lab}_w1-k8s ipvsadm -Ln > "$R/ipvsadm.txt" 2>&1
$N scale deployment np-pods --replicas=1 > /dev/null 2>&1
$N rollout status deployment/np-pods --timeout 120 > "$R/rollout.txt" 2>&1
$N get pods -l app=np-pods -o name | sed 's|^pod/||' > "$R/pods-after.txt" 2>&1
sleep 2
for i in 1 2 3 4 5 6; do curl -s -m 5 192.168.1.101:30000; echo; done > "$R/nodeport-after.txt"
$N down > "$R/down.txt" 2>&1; echo $? > "$R/down.rc"
ip netns list > "$R/netns-after.txt"
"""


@pytest.fixture(scope="module")
def guest(kit, tmp_path_factory):
    problem = checkout_problem()  # e.g. a clone under /tmp: the guest has its own /tmp
    if problem:
        pytest.skip(f"the VM cannot run this checkout: {problem}")
    workdir = tmp_path_factory.mktemp("ipvs-vm-lab")
    (workdir / "guest.sh").write_text(GUEST.format(python=sys.executable, repo=REPO, lab=LAB))
    t0 = time.monotonic()
    run = run_script(kit, workdir, "guest.sh", timeout=420, modules=MODULES)
    print(f"\nVM run {time.monotonic() - t0:.1f} s (guest ready at {run.ready_at} s, done at {run.exit_at} s)")
    results = workdir / "results"
    if (results / "not-visible").exists():
        pytest.skip(f"the VM cannot run this checkout: {(results / 'not-visible').read_text().strip()}")
    assert run.rc == 0, f"guest script failed (rc={run.rc}):\n{run.output[-6000:]}"

    def read(name: str) -> str:
        return (results / name).read_text()

    return read


def answers(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_up_in_ipvs_mode_gets_every_pod_ready(guest):
    assert guest("up.rc").strip() == "0", guest("up.txt")
    assert "Ready" in guest("up.txt")
    assert len(guest("pods.txt").split()) == 3


def test_node_port_balances_over_every_pod_through_ipvs(guest):
    pods = set(guest("pods.txt").split())
    got = answers(guest("nodeport.txt"))
    assert len(got) == 9 and set(got) == pods, got  # rr over three real servers: each one, three times
    ipvs = guest("ipvsadm.txt")
    assert "TCP  192.168.1.101:30000 rr" in ipvs, ipvs
    assert ipvs.count("Masq") >= 3 * 3, ipvs  # ClusterIP, NodePort on the node IP, the LB IP: 3 pods each


def test_cluster_ip_from_a_pod_and_the_dummy_interface(guest):
    pods = set(guest("pods.txt").split())
    got = answers(guest("clusterip.txt"))
    assert got and set(got) <= pods and len(set(got)) > 1, got
    assert "kube-ipvs0" in guest("kube-ipvs0.txt") and "192.168.1.11/32" in guest("kube-ipvs0.txt")


def test_load_balancer_ip_answered_by_the_speaker_in_ipvs_mode(guest):
    # the IP sits on every node's kube-ipvs0 behind arp_ignore: only the elected speaker's raw-socket
    # reply brings the host's packets to a node
    assert "192.168.1.11" in guest("svc-lb.txt"), guest("svc-lb.txt")
    pods = set(guest("pods.txt").split())
    got = answers(guest("lb.txt"))
    assert len(got) == 6 and set(got) <= pods, got


def test_scale_down_leaves_one_real_server_and_down_leaves_nothing(guest):
    left = guest("pods-after.txt").split()
    assert len(left) == 1, guest("rollout.txt")
    assert set(answers(guest("nodeport-after.txt"))) == set(left)
    assert guest("down.rc").strip() == "0", guest("down.txt")
    assert guest("netns-after.txt").strip() == ""
