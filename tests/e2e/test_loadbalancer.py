"""LoadBalancer Services with MetalLB-style pools and ARP speakers, from a client on the lab segment."""
from __future__ import annotations

import re
import subprocess
import time

import pytest

from conftest import curl

POOL = """\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: pool, namespace: metallb-system}}
spec:
  addresses: ["{first}-{last}"]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {{name: l2, namespace: metallb-system}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: c, image: sysnet4admin/echo-ip, ports: [{{containerPort: 80}}]}}]
"""


class Client:
    """A machine on the lab segment: a namespace with a veth into the lab's bridge."""

    def __init__(self, lab, address: str):
        self.lab = lab
        self.ns = lab.node_netns("zclient")  # named after the lab: `down` sweeps it too
        self.address = address
        sw = f"ne-{lab.name}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "-n", sw, "link", "add", "zclient", "type", "veth", "peer", "name", "eth0", "netns",
                        self.ns], check=True)
        subprocess.run(["ip", "-n", sw, "link", "set", "zclient", "master", "br0", "up"], check=True)
        for cmd in (["link", "set", "lo", "up"], ["addr", "add", f"{address}/24", "dev", "eth0"],
                    ["link", "set", "eth0", "up"]):
            subprocess.run(["ip", "-n", self.ns, *cmd], check=True)

    def run(self, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns, *cmd], capture_output=True, text=True,
                              timeout=timeout)

    def arping(self, ip: str, count: int = 2) -> list[str]:
        """MACs that answered."""
        out = self.run("arping", "-c", str(count), "-w", str(count + 1), "-I", "eth0", ip).stdout
        return re.findall(r"bytes from ([0-9a-f:]{17})", out, re.I)  # Debian arping: "60 bytes from MAC (IP)"

    def curl(self, ip: str, timeout: float = 2) -> str:
        res = self.run("curl", "-s", "-m", str(timeout), f"http://{ip}/")
        return res.stdout if res.returncode == 0 else f"<curl rc={res.returncode}>"

    def neigh_mac(self, ip: str) -> str:
        out = self.run("ip", "neigh", "show", ip).stdout.split()
        return out[out.index("lladdr") + 1] if "lladdr" in out else ""

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns])


def node_mac(lab, node: str) -> str:
    out = lab.node_exec(node, "cat", "/sys/class/net/eth0/address").stdout
    return out.strip()


@pytest.fixture
def lb_lab(lab, tmp_path):
    base = lab.gateway.rsplit(".", 1)[0]
    lab.pool = (f"{base}.11", f"{base}.12")
    lab.up(POOL.format(first=lab.pool[0], last=lab.pool[1], replicas=3), tmp_path=tmp_path)
    client = Client(lab, f"{base}.200")
    lab.client = client
    yield lab
    client.close()


def announcer(lab, svc: str) -> str:
    line = next(line for line in lab.run("get", "svc", svc, "-o", "wide").stdout.splitlines()[1:])
    return line.split()[-1]


def test_lb_ip_answers_arp_from_the_elected_node_and_serves(lb_lab):
    lab = lb_lab
    lab.run("expose", "deployment", "web", "--type=LoadBalancer", "--name=web-lb", "--port=80")
    ip = lab.wait_for(lambda: (lab.get("svc", "web-lb")[0]["status"]["loadBalancer"].get("ingress") or [{}])[0]
                      .get("ip"), what="an EXTERNAL-IP")
    assert ip == lab.pool[0]
    node = lab.wait_for(lambda: (n := announcer(lab, "web-lb")) != "<none>" and n, what="an announcing node")
    assert node != "m-k8s"  # kubeadm's exclude-from-external-load-balancers label
    macs = lab.client.arping(ip)
    assert macs and set(m.lower() for m in macs) == {node_mac(lab, node)}
    # the pods answer from behind the LB IP, from the client and from the host
    assert "ip_dest" in lab.client.curl(ip)
    assert "ip_dest" in curl(lab, ip, 80)
    # an address of the pool that no Service holds gets no ARP reply at all
    assert lab.client.arping(lab.pool[1]) == []
    # the events say who did what
    desc = lab.run("describe", "svc", "web-lb").stdout
    assert f'Assigned IP ["{ip}"]' in desc and f'announcing from node "{node}"' in desc


def test_failover_sends_gratuitous_arp_and_traffic_resumes(lb_lab):
    lab = lb_lab
    lab.run("expose", "deployment", "web", "--type=LoadBalancer", "--name=web-lb", "--port=80")
    ip = lab.pool[0]
    node = lab.wait_for(lambda: (n := announcer(lab, "web-lb")) != "<none>" and n, what="an announcing node")
    assert "ip_dest" in lab.client.curl(ip)
    assert lab.client.neigh_mac(ip) == node_mac(lab, node)
    t0 = time.time()
    lab.run("node", "down", node)
    new = lab.wait_for(lambda: (n := announcer(lab, "web-lb")) not in ("<none>", node) and n, timeout=5,
                       interval=0.05, what="the IP to move")
    # gratuitous ARP from the new owner moved the client's cache without it asking
    lab.wait_for(lambda: lab.client.neigh_mac(ip) == node_mac(lab, new), timeout=3, interval=0.05,
                 what="the client's neighbour entry to follow")
    lab.wait_for(lambda: "ip_dest" in lab.client.curl(ip, timeout=1), timeout=5, interval=0.05,
                 what="traffic through the new owner")
    assert time.time() - t0 < 5
    lab.run("node", "up", node)


def test_killed_speaker_moves_the_ip(lb_lab):
    lab = lb_lab
    lab.run("expose", "deployment", "web", "--type=LoadBalancer", "--name=web-lb", "--port=80")
    node = lab.wait_for(lambda: (n := announcer(lab, "web-lb")) != "<none>" and n, what="an announcing node")
    lab.run("speaker", "kill", node)
    new = lab.wait_for(lambda: (n := announcer(lab, "web-lb")) not in ("<none>", node) and n, timeout=5,
                       what="another node to announce")
    assert lab.client.arping(lab.pool[0]) and set(m.lower() for m in lab.client.arping(lab.pool[0])) == {
        node_mac(lab, new)}
    lab.run("speaker", "start", node)


def test_local_policy_announces_from_a_pod_node_and_keeps_source_ip(lb_lab, tmp_path):
    lab = lb_lab
    lab.run("scale", "deployment", "web", "--replicas=1")
    lab.wait_for(lambda: len(lab.pods("app=web")) == 1, what="one pod")
    pod_node = lab.pods("app=web")[0]["spec"]["nodeName"]
    svc = tmp_path / "local.yaml"
    svc.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web-local}\nspec:\n  type: LoadBalancer\n"
                   "  externalTrafficPolicy: Local\n  selector: {app: web}\n  ports: [{port: 80}]\n")
    lab.run("apply", "-f", str(svc))
    lab.wait_for(lambda: announcer(lab, "web-local") == pod_node, what="the pod's node to announce")
    out = lab.client.curl(lab.pool[0])
    assert lab.client.address in out, f"the pod sees the client's own address: {out!r}"


def test_pool_exhaustion_leaves_the_service_pending(lb_lab):
    lab = lb_lab
    for name in ("a", "b", "c"):
        lab.run("expose", "deployment", "web", "--type=LoadBalancer", f"--name={name}", "--port=80")
    time.sleep(0.3)
    svc = lab.get("svc", "c")[0]
    assert not svc["status"]["loadBalancer"].get("ingress")
    assert "<pending>" in lab.run("get", "svc", "c").stdout
    assert "AllocationFailed" in lab.run("describe", "svc", "c").stdout
    # freeing an address lets the pending Service have it
    lab.run("delete", "svc", "a")
    lab.wait_for(lambda: (lab.get("svc", "c")[0]["status"]["loadBalancer"].get("ingress") or [{}])[0].get("ip")
                 == lab.pool[0], what="the freed address to go to the pending Service")
