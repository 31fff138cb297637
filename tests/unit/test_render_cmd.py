"""`netemu render` on any cluster's objects: kube-proxy's own test inputs, unmodified (ClusterIPs in
172.30.0.0/16, nodePorts 3001..), come out byte for byte as kube-proxy's tests expect them, with
warnings for what a lab would refuse; `kubectl get svc,endpointslices -A -o yaml` (a kind: List)
renders as it is; --nodeport-addresses reaches the renderer.

Everything goes through the command line (netemu.cli.main.main) from YAML files, as a user runs it.
The inputs are the renderer tests' (kube_objects, TestOverallIPTablesRules / TestBadIPs /
TestOverallNFTablesRules / TestNodePorts), written out as YAML; the expected texts are the same
fixtures those tests compare with.
"""
from __future__ import annotations

import pathlib
import re

import pytest
import yaml

from netemu.cli.main import main
from netemu.dataplane.proxy.nftables.model import NftModel, normalize
from kube_objects import NODE, ep, overall_inputs, port, slice_, svc

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
KUBECTL_LIST = FIXTURES / "kubectl_get_svc_endpointslices.yaml"
# kube-proxy's test node: its addresses and pod CIDR (iptables: NODE_IPS; nftables adds the IPv6 ones)
IPTABLES_NODE = ["--node-name", NODE, "--node-ip", "192.168.0.2", "--node-ip", "192.168.1.2",
                 "--node-ip", "192.168.99.11", "--cluster-cidr", "10.0.0.0/8", "--fake-proxier"]
NFTABLES_NODE = IPTABLES_NODE + ["--node-ip", "2001:db8::1", "--node-ip", "2001:db8:1::2",
                                 "--service-cidr", "172.30.0.0/16"]
NODEPORTS_LAST = ('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
                  'the last rule in this chain"')


def write_yaml(path: pathlib.Path, objects) -> pathlib.Path:
    docs = [o.model_dump(by_alias=True, exclude_none=True, mode="json") for o in objects]
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def render(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["render", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def bad_ips_inputs():
    """TestBadIPs: addresses spelt with leading zeros, as old API servers let them through."""
    services = [svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.041", ports=[port(nodePort=3001)],
                    externalIPs=["192.168.099.022"], loadBalancerSourceRanges=["203.0.113.000/025"],
                    status={"loadBalancer": {"ingress": [{"ip": "1.2.3.004"}]}})]
    return services, [slice_("ns1", "svc1", [ep("10.180.00.001")], [port()])]


@pytest.mark.parametrize("inputs,expected", [(overall_inputs, "overall.rules"), (bad_ips_inputs, "bad_ips.rules")])
def test_kube_proxys_own_inputs_render_byte_for_byte(tmp_path, capsys, inputs, expected):
    services, slices = inputs()
    path = write_yaml(tmp_path / "objects.yaml", services + slices)
    text = path.read_text()
    assert re.search(r"clusterIP: 172\.30\.0\.", text) and "nodePort: 3001" in text  # unmodified: a lab refuses them
    code, out, err = render(capsys, "iptables", "-f", path, *IPTABLES_NODE)
    assert code == 0, err
    assert out == (FIXTURES / "kubeproxy" / expected).read_text()
    # what a lab would refuse is said, on stderr, and rendered anyway
    assert "error" not in err
    assert "spec.ports[0].nodePort: 3001 is outside the lab's nodePortRange 30000-32767" in err
    assert "(rendered as written, as kube-proxy would)" in err


def test_overall_inputs_warn_for_every_service_outside_the_labs_service_cidr(tmp_path, capsys):
    path = write_yaml(tmp_path / "objects.yaml", overall_inputs()[0] + overall_inputs()[1])
    code, _, err = render(capsys, "iptables", "-f", path, *IPTABLES_NODE)
    assert code == 0
    outside = [line for line in err.splitlines() if "is not in the lab's serviceCIDR 10.96.0.0/12" in line]
    assert [line.split("(Service/")[1].split(")")[0] for line in outside] == [f"svc{i}" for i in range(1, 7)]
    assert all(line.startswith("warning: ") for line in err.splitlines())


def test_kube_proxys_own_inputs_render_in_nftables_with_nodeport_addresses(tmp_path, capsys):
    """TestOverallNFTablesRules runs with --nodeport-addresses 192.168.0.2/32,2001:db8::1/128: the
    transaction `render` prints leaves the table kube-proxy's test expects (compared as it compares)."""
    path = write_yaml(tmp_path / "objects.yaml", overall_inputs()[0] + overall_inputs()[1])
    code, out, err = render(capsys, "nftables", "-f", path, *NFTABLES_NODE,
                            "--nodeport-addresses", "192.168.0.2/32,2001:db8::1/128")
    assert code == 0, err
    model = NftModel()
    model.apply(out)
    kube_proxy = FIXTURES / "kubeproxy_nft"
    assert normalize(model.dump()) == normalize((kube_proxy / "base.nft").read_text()
                                                + (kube_proxy / "overall.nft").read_text())
    # every address (0.0.0.0/0) is another table: the flag reaches the renderer
    code, every_out, _ = render(capsys, "nftables", "-f", path, *NFTABLES_NODE, "--nodeport-addresses", "0.0.0.0/0")
    assert code == 0
    assert "fib daddr type local" in every_out and "fib daddr type local" not in out


@pytest.mark.parametrize("flags,last_rules,localhost", [
    ([], [f"{NODEPORTS_LAST} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"], True),
    (["--no-localhost-nodeports", "--nodeport-addresses", "192.168.0.0/24,127.0.0.1/32"],
     [f"{NODEPORTS_LAST} -d 192.168.0.2 -j KUBE-NODEPORTS"], False),
    (["--nodeport-addresses", "192.168.0.0/24", "--nodeport-addresses", "192.168.1.0/24, 2001:db8::/64"],
     [f"{NODEPORTS_LAST} -d 192.168.0.2 -j KUBE-NODEPORTS", f"{NODEPORTS_LAST} -d 192.168.1.2 -j KUBE-NODEPORTS"],
     False),
    (["--nodeport-addresses", "127.0.0.0/8"], [f"{NODEPORTS_LAST} -d 127.0.0.1 -j KUBE-NODEPORTS"], True),
])
def test_nodeport_addresses(tmp_path, capsys, flags, last_rules, localhost):
    """kube-proxy's TestNodePorts: which node addresses take NodePorts, and whether localhost does."""
    services = [svc("ns1", "svc1", type="NodePort", clusterIP="172.30.0.41", ports=[port(nodePort=3001)])]
    slices = [slice_("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.2.1", NODE)], [port()])]
    path = write_yaml(tmp_path / "objects.yaml", services + slices)
    code, out, err = render(capsys, "iptables", "-f", path, *IPTABLES_NODE, *flags)
    assert code == 0, err
    assert [line for line in out.splitlines() if line.startswith(NODEPORTS_LAST)] == last_rules
    assert any("-d 127.0.0.0/8 --dport 3001" in line for line in out.splitlines()) is localhost


def test_kubectl_get_list_renders_as_it_is(tmp_path, capsys):
    """What `kubectl get svc,endpointslices -A -o yaml` prints for a kind cluster (server-set fields,
    ownerReferences, unnamed ports, a not-ready endpoint): read as a kind: List, and the same
    objects as separate documents render the same."""
    node = ["--node-name", "kind-worker", "--node-ip", "172.18.0.3", "--cluster-cidr", "10.244.0.0/16"]
    code, out, err = render(capsys, "iptables", "-f", KUBECTL_LIST, *node)
    assert code == 0, err
    lines = out.splitlines()
    assert '-A KUBE-NODEPORTS -m comment --comment default/web -m tcp -p tcp --dport 31080 -j KUBE-EXT-LOLE4ISW44XBNF3G' \
        in lines
    assert ('-A KUBE-SERVICES -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp -p udp -d 10.96.0.10 '
            '--dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU') in lines
    dnat = sorted(line.rsplit(" ", 1)[1] for line in lines if "-j DNAT --to-destination" in line)
    assert dnat == ["10.244.0.3:53", "10.244.0.3:53", "10.244.0.3:9153", "10.244.0.4:53", "10.244.0.4:53",
                    "10.244.0.4:9153", "10.244.1.5:8080", "10.244.2.7:8080", "172.18.0.2:6443"]  # 10.244.2.9 is not ready
    assert "items[2].spec.clusterIP: 10.96.0.10 is the cluster DNS address" in err  # kube-dns: the lab's own
    assert "error" not in err
    items = yaml.safe_load(KUBECTL_LIST.read_text())["items"]
    flat = tmp_path / "flat.yaml"
    flat.write_text(yaml.safe_dump_all(items, sort_keys=False))
    code, flat_out, _ = render(capsys, "iptables", "-f", flat, *node)
    assert code == 0 and flat_out == out


def test_services_without_a_cluster_ip_get_one_around_those_given(tmp_path, capsys):
    """A Service without a clusterIP gets one from the lab's serviceCIDR, as the API server gives it;
    the others keep theirs even where the lab would refuse them (no admission error for them)."""
    services = [svc("ns1", "given", type="NodePort", clusterIP="172.30.0.41", ports=[port(nodePort=3001)]),
                svc("ns1", "asked", type="NodePort", ports=[port()])]
    slices = [slice_("ns1", name, [ep(f"10.180.0.{i}")], [port()]) for i, name in enumerate(("given", "asked"), 1)]
    path = write_yaml(tmp_path / "objects.yaml", services + slices)
    code, out, err = render(capsys, "iptables", "-f", path, *IPTABLES_NODE)
    assert code == 0, err
    allocated = [line for line in err.splitlines() if "ns1/asked had no clusterIP: allocated" in line]
    assert len(allocated) == 1
    ip = allocated[0].rsplit(" ", 1)[1]
    assert ip.startswith("10.") and f"-d {ip} --dport 80" in out and "-d 172.30.0.41 --dport 80" in out
    node_ports = [line for line in out.splitlines() if line.startswith("-A KUBE-NODEPORTS") and "ns1/asked" in line]
    assert node_ports and all(30000 <= int(line.split("--dport ")[1].split()[0]) <= 32767 for line in node_ports)


def test_what_no_cluster_holds_is_still_an_error(tmp_path, capsys):
    """Only what a lab refuses but a cluster may hold turns into a warning: two Services on one
    nodePort never come from a cluster."""
    services = [svc("ns1", "a", type="NodePort", clusterIP="172.30.0.41", ports=[port(nodePort=3001)]),
                svc("ns1", "b", type="NodePort", clusterIP="172.30.0.42", ports=[port(nodePort=3001)])]
    code, out, err = render(capsys, "iptables", "-f", write_yaml(tmp_path / "objects.yaml", services), *IPTABLES_NODE)
    assert code == 1 and out == ""
    assert "3001/TCP is already used by Service ns1/a" in err
