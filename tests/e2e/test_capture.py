"""Packets where people want to see them: `netemu capture` writes a pcap (file or stdout) with the
packets of a curl, `netemu trace` names the kube-proxy chains a NodePort connection walks and, once
a connection exists, its conntrack entry and DNAT target."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from conftest import NP_PODS, NP_SVC, curl

scapy_all = pytest.importorskip("scapy.all")

HNAME = (NP_PODS + NP_SVC).format(replicas=3)


def start_capture(lab, *args: str, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    """netemu capture ..., returned once tcpdump is listening."""
    proc = subprocess.Popen([sys.executable, "-m", "netemu", "capture", "--lab", lab.name, *args], stdout=stdout,
                            stderr=subprocess.PIPE, text=False)
    seen = b""
    while b"listening on" not in seen:
        line = proc.stderr.readline()
        if not line:
            proc.wait(5)
            raise AssertionError(f"capture did not start: {seen.decode()}")
        seen += line
    proc.banner = seen.decode()  # netemu's "capturing on ..." and tcpdump's "listening on ..."
    return proc


def finish(proc: subprocess.Popen, timeout: float = 20) -> tuple[bytes, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()
    return out or b"", err.decode()


@pytest.fixture
def np_lab(lab, tmp_path):
    lab.up(HNAME, tmp_path=tmp_path)
    return lab


def test_capture_on_a_node_while_curling(np_lab, tmp_path):
    lab = np_lab
    w1 = lab.node_ips["w1-k8s"]
    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in lab.pods("app=np-pods")}
    pcap = tmp_path / "w1.pcap"
    proc = start_capture(lab, "w1-k8s", "tcp", "port", "30000", "or", "tcp", "port", "80", "-w", str(pcap),
                         "--duration", "8", "-c", "400")
    answers = [curl(lab, w1, 30000).strip() for _ in range(3)]
    assert set(answers) <= set(pods), answers
    _, err = finish(proc)
    assert "packets captured" in err
    packets = scapy_all.rdpcap(str(pcap))
    IP, TCP, Raw = scapy_all.IP, scapy_all.TCP, scapy_all.Raw
    tcp = [p for p in packets if p.haslayer(IP) and p.haslayer(TCP)]
    syns = [p for p in tcp if p[IP].dst == w1 and p[TCP].dport == 30000 and p[TCP].flags & 0x02]
    assert len(syns) >= 3, [p.summary() for p in tcp]
    assert all(p[IP].src == lab.gateway for p in syns)
    # the same connections after kube-proxy's DNAT: to a pod's port 80, masqueraded by the node
    dnated = [p for p in tcp if p[IP].dst in pods.values() and p[TCP].dport == 80]
    assert dnated, [p.summary() for p in tcp]
    assert {p[IP].src for p in dnated} != {lab.gateway}
    # the replies carry the pods' names
    payload = b"".join(bytes(p[Raw].load) for p in tcp if p.haslayer(Raw) and p[TCP].sport in (80, 30000))
    assert any(name.encode() in payload for name in answers)


def test_capture_in_a_pod_to_stdout(np_lab):
    lab = np_lab
    pod = lab.pods("app=np-pods")[0]
    name, ip, node = pod["metadata"]["name"], pod["status"]["podIP"], pod["spec"]["nodeName"]
    proc = start_capture(lab, name, "-w", "-", "-c", "6", "tcp", "port", "80", "--duration", "8",
                         stdout=subprocess.PIPE)
    res = lab.node_exec(node, "curl", "-s", "-m", "3", f"http://{ip}:80/")
    assert res.stdout.strip() == name
    out, err = finish(proc)
    assert f"pod {name}" in proc.banner and "interface eth0" in proc.banner and "captured" in err
    packets = scapy_all.rdpcap(io.BytesIO(out))
    assert len(packets) == 6
    IP, TCP, Ether = scapy_all.IP, scapy_all.TCP, scapy_all.Ether
    assert all(p.haslayer(Ether) for p in packets)  # eth0's own link type, not "any"'s cooked header
    assert any(p.haslayer(TCP) and p[IP].dst == ip and p[TCP].dport == 80 and p[TCP].flags & 0x02 for p in packets)


def test_capture_on_the_segment_and_errors(np_lab, tmp_path):
    lab = np_lab
    pcap = tmp_path / "arp.pcap"
    proc = start_capture(lab, "--segment", "arp", "-c", "2", "--duration", "8", "-w", str(pcap))
    lab.node_exec("w1-k8s", "arping", "-c", "1", "-w", "2", lab.node_ips["w2-k8s"])
    finish(proc)
    arps = [p for p in scapy_all.rdpcap(str(pcap)) if p.haslayer(scapy_all.ARP)]
    assert arps and arps[0][scapy_all.ARP].pdst == lab.node_ips["w2-k8s"]
    res = lab.run("capture", "no-such-thing", "-c", "1", check=False)
    assert res.returncode != 0 and "neither a node nor a pod" in res.stderr


def test_trace_nodeport_names_kube_chains_and_conntrack(np_lab):
    lab = np_lab
    w1 = lab.node_ips["w1-k8s"]
    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in lab.pods("app=np-pods")}
    out = lab.run("trace", "np-svc", "--node", "w1-k8s").stdout
    assert f"{w1}:30000/tcp  [NodePort 30000 (port http)]" in out
    assert "-A KUBE-NODEPORTS" in out and "KUBE-EXT-" in out and "-A KUBE-SVC-" in out and "-A KUBE-SEP-" in out
    for ip in pods.values():
        assert f"--to-destination {ip}:80" in out
    assert "masqueraded" in out

    assert curl(lab, w1, 30000).strip() in pods
    res = lab.run("trace", f"{w1}:30000", "-o", "json")
    doc = json.loads(res.stdout)
    assert doc["node"] == "w1-k8s" and doc["src"] == lab.gateway
    r = doc["results"][0]
    assert any(c.startswith("KUBE-SVC-") for c in r["chains"]) and any(c.startswith("KUBE-SEP-") for c in r["chains"])
    assert sorted(r["dnat"]) == sorted(f"{ip}:80" for ip in pods.values())
    live = [c for c in r["conntrack"] if c["src"].startswith(lab.gateway + ":")]
    assert live, r["conntrack"]
    assert live[0]["dst"] == f"{w1}:30000" and live[0]["dnat"] in {f"{ip}:80" for ip in pods.values()}
    text = lab.run("trace", f"{w1}:30000").stdout
    assert "conntrack on w1-k8s" in text and "DNAT -> " in text

    # from a pod to the ClusterIP: traced on the pod's node, entering by PREROUTING
    pod = lab.pods("app=np-pods")[0]
    doc = json.loads(lab.run("trace", "np-svc", "--from", pod["metadata"]["name"], "--port", "http",
                             "-o", "json").stdout)
    assert doc["node"] == pod["spec"]["nodeName"] and doc["src"] == pod["status"]["podIP"]
    assert doc["results"][0]["via"].startswith("ClusterIP") and doc["results"][0]["entry"] == "PREROUTING"


@pytest.fixture
def nft_lab(make_lab, tmp_path):
    lab = make_lab()
    lab.default_spec = {"proxyMode": "nftables"}
    lab.up(HNAME, tmp_path=tmp_path)
    return lab


def test_trace_in_nftables_mode_walks_the_kube_proxy_table(nft_lab):
    lab = nft_lab
    w1 = lab.node_ips["w1-k8s"]
    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in lab.pods("app=np-pods")}
    out = lab.run("trace", "np-svc", "--node", "w1-k8s").stdout
    assert "nftables mode" in out and "table ip kube-proxy" in out and "chain nat-prerouting" in out, out
    assert "KUBE-" not in out  # nothing of the iptables mode
    assert "chosen by the numgen rules" in out
    for ip in pods.values():
        assert f"{ip}:80" in out
    assert curl(lab, w1, 30000).strip() in pods
    doc = json.loads(lab.run("trace", f"{w1}:30000", "-o", "json").stdout)
    r = doc["results"][0]
    assert doc["mode"] == "nftables"
    assert any(c.startswith("service-") for c in r["chains"]) and any(c.startswith("endpoint-") for c in r["chains"])
    assert sorted(r["dnat"]) == sorted(f"{ip}:80" for ip in pods.values()) and r["masquerade"]
    live = [c for c in r["conntrack"] if c["src"].startswith(lab.gateway + ":")]
    assert live and live[0]["dnat"] in {f"{ip}:80" for ip in pods.values()}


NO_ENDPOINTS = """\
apiVersion: v1
kind: Service
metadata:
  name: nobody-svc
spec:
  type: NodePort
  selector: {app: nobody}
  ports:
  - {port: 80, nodePort: 30099}
"""


def test_trace_service_without_endpoints_is_rejected(np_lab, tmp_path):
    lab = np_lab
    path = tmp_path / "nobody.yaml"
    path.write_text(NO_ENDPOINTS)
    lab.run("apply", "-f", str(path))
    lab.wait_for(lambda: "nobody-svc" in lab.run("rules", "w1-k8s").stdout, what="nobody-svc's rules")
    out = lab.run("trace", "nobody-svc", "--node", "w1-k8s").stdout
    assert "REJECT" in out and "has no endpoints" in out and "DNAT to" not in out


def test_conntrack_and_iptables_save_parsing():
    from netemu.dataplane.capture import SavedRuleset, indent_matches, parse_conntrack

    text = ("tcp      6 117 TIME_WAIT src=192.168.1.1 dst=192.168.1.101 sport=51234 dport=30000 "
            "src=172.16.2.3 dst=192.168.1.101 sport=80 dport=4711 [ASSURED] mark=0 use=1\n"
            "udp      17 29 src=172.16.1.2 dst=10.96.0.10 sport=40000 dport=53 [UNREPLIED] "
            "src=10.96.0.10 dst=172.16.1.2 sport=53 dport=40000 mark=0 use=1\n"
            "conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.\n")
    tcp, udp = parse_conntrack(text)
    assert (tcp.state, tcp.dnat, tcp.snat, tcp.flags) == ("TIME_WAIT", "172.16.2.3:80", "192.168.1.101:4711",
                                                          ("ASSURED",))
    assert (udp.proto, udp.state, udp.dnat, udp.snat) == ("udp", "", None, None)
    rules = SavedRuleset.parse("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-X - [0:0]\n"
                               "-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-X\n"
                               "-A KUBE-SVC-X -j KUBE-SEP-Y\nCOMMIT\n*filter\n:KUBE-SERVICES - [0:0]\nCOMMIT\n")
    assert rules.chain("nat", "KUBE-SVC-X") == ("-A KUBE-SVC-X -j KUBE-SEP-Y",)
    assert rules.chain("filter", "KUBE-SERVICES") == () and rules.only("filter").chain("nat", "KUBE-SVC-X") == ()
    assert [d for d, _ in indent_matches(list(rules.chain("nat", "KUBE-SERVICES")) +
                                         list(rules.chain("nat", "KUBE-SVC-X")))] == [0, 1]
