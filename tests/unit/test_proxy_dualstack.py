"""kube-proxy in both IP families: one view and one proxier per family, as kube-proxy's MetaProxier runs
them in a dual-stack cluster (issue 19).

- kube-proxy's own IPv6 expectations for the iptables mode (pkg/proxy/iptables/proxier_test.go,
  TestEnableLocalhostNodePortsIPv6 and TestDisableLocalhostNodePortsIPv6; their IPv4 twins first, to show
  the same settings reproduce that version's IPv4 text), byte for byte. The nftables and IPVS IPv6 cases
  are in test_proxy_nftables.py and test_proxy_ipvs.py, the iptables IPv6 packet flows in test_proxy_flows.py.
- the node views of a dual-stack Service: clusterIP, slices, node address, LB ingress and externalIPs,
  pod CIDR of each family; Services without the family left out;
- KubeProxy in a dual-stack lab through a fake runner: ip6tables-restore of the same backend, table
  `ip6 kube-proxy`, conntrack deletions with `-f ipv6`, IPVS's IPv4 only, an IPv4-only lab unchanged;
- `netemu render` of IPv6 and dual-stack Services.
"""
from __future__ import annotations

import asyncio
import textwrap
import types

import pytest

from netemu.dataplane.proxy.addresses import IPV4, IPV6
from netemu.dataplane.proxy.conntrack import stale_udp_conntrack
from netemu.dataplane.proxy.iptables.render import render as iptables_render
from netemu.dataplane.proxy.kubeproxy import KubeProxy, proxy_families
from netemu.dataplane.proxy.nftables.render import NftSettings
from netemu.dataplane.proxy.nftables.render import render as nftables_render
from netemu.dataplane.proxy.runner import FakeRunner
from netemu.dataplane.proxy.view import KUBE_PROXY_TEST_OPTIONS, build_view, build_views
from netemu.spec.defaults import default_lab
from netemu.spec.models import Lab, Service
from kube_objects import NODE, ep, port, slice_, svc


# --------------------------------------------------------------------------- kube-proxy's IPv6 texts
# NewFakeProxier of that kube-proxy version: mark 0x4000, no --random-fully, no nfacct counters; the tests
# set a no-op local-traffic detector (no --cluster-cidr).
OLD_FAKE_PROXIER = {**KUBE_PROXY_TEST_OPTIONS, "nfacct": False}

FILTER = """\
*filter
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
{firewall_decl}:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
{firewall_rule}-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
"""

NAT = """\
*nat
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXT-XPGD46QRK7WJZT7O - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-{sep1} - [0:0]
:KUBE-SEP-{sep2} - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SVL-XPGD46QRK7WJZT7O - [0:0]
-A KUBE-NODEPORTS -m comment --comment ns1/svc1:p80 -m tcp -p tcp --dport 30001 -j KUBE-EXT-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d {svc_ip} --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL {not_local}-j KUBE-NODEPORTS
-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "masquerade LOCAL traffic for ns1/svc1:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "route LOCAL traffic for ns1/svc1:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-EXT-XPGD46QRK7WJZT7O -j KUBE-SVL-XPGD46QRK7WJZT7O
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SEP-{sep1} -m comment --comment ns1/svc1:p80 -s {ep1} -j KUBE-MARK-MASQ
-A KUBE-SEP-{sep1} -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination {hp1}
-A KUBE-SEP-{sep2} -m comment --comment ns1/svc1:p80 -s {ep2} -j KUBE-MARK-MASQ
-A KUBE-SEP-{sep2} -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination {hp2}
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> {hp1}" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-{sep1}
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> {hp2}" -j KUBE-SEP-{sep2}
-A KUBE-SVL-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> {hp2}" -j KUBE-SEP-{sep2}
COMMIT
"""

FIREWALL_DECL = ":KUBE-FIREWALL - [0:0]\n"
FIREWALL_RULE = ('-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 '
                 "! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n")
V4 = dict(svc_ip="10.69.0.10", ep1="10.244.0.1", ep2="10.244.2.1", hp1="10.244.0.1:80", hp2="10.244.2.1:80",
          sep1="6KG6DFHVBKBK53RU", sep2="KDGX2M2ONE25PSWH")
V6 = dict(svc_ip="fd00:ab34::20", ep1="ff06::c1", ep2="ff06::c2", hp1="[ff06::c1]:80", hp2="[ff06::c2]:80",
          sep1="LIGRYQQLSZN4UWQ5", sep2="XJJ5QXWGJG344QDZ")


def _localhost_case(family: str, localhost: bool) -> str:
    v = V4 if family == IPV4 else V6
    extra = {} if family == IPV4 else {"ipFamilies": [IPV6], "clusterIPs": [v["svc_ip"]]}
    services = [svc("ns1", "svc1", type="NodePort", clusterIP=v["svc_ip"], externalTrafficPolicy="Local",
                    ports=[port(nodePort=30001)], **extra)]
    slices = [slice_("ns1", "svc1", [ep(v["ep1"]), ep(v["ep2"], NODE)], [port()], address_type=family)]
    node_ips = ["192.168.0.2"] if family == IPV4 else ["2001:db8::1"]
    view = build_view(services, slices, node_name=NODE, node_ips=node_ips, cluster_cidr=None, ip_family=family,
                      **{**OLD_FAKE_PROXIER, "localhost_nodeports": localhost})
    return iptables_render(view).payload()


@pytest.mark.parametrize("family,localhost", [(IPV4, True), (IPV4, False), (IPV6, True), (IPV6, False)])
def test_localhost_nodeports_cases_are_byte_identical_to_kube_proxy(family, localhost):
    v4_local = family == IPV4 and localhost   # localhost NodePorts exist in IPv4 only
    expected = FILTER.format(firewall_decl=FIREWALL_DECL if v4_local else "",
                             firewall_rule=FIREWALL_RULE if v4_local else "")
    not_local = "" if v4_local else ("! -d 127.0.0.0/8 " if family == IPV4 else "! -d ::1/128 ")
    expected += NAT.format(not_local=not_local, **(V4 if family == IPV4 else V6))
    assert _localhost_case(family, localhost) == expected


# --------------------------------------------------------------------------- views
def dual_lab(mode="iptables", backend="nft") -> Lab:
    lab = Lab.model_validate({"spec": {
        "network": "192.168.1.0/24,fd00:192:168:1::/64", "podCIDR": "172.16.0.0/16,fd00:10:244::/56",
        "serviceCIDR": "10.96.0.0/12,fd00:10:96::/112", "proxyMode": mode, "iptablesBackend": backend,
        "nodes": [{"name": "w1-k8s", "ip": "192.168.1.101,fd00:192:168:1::101"},
                  {"name": "w2-k8s", "ip": "192.168.1.102,fd00:192:168:1::102"}]}})
    return default_lab(lab)


def ds_service(name="web", *, families=(IPV4, IPV6), protocol="TCP", **spec) -> Service:
    ips = {IPV4: "10.96.0.50", IPV6: "fd00:10:96::50"}
    return svc("default", name, type=spec.pop("type", "NodePort"),
               ipFamilyPolicy="PreferDualStack" if len(families) > 1 else "SingleStack",
               ipFamilies=list(families), clusterIP=ips[families[0]], clusterIPs=[ips[f] for f in families],
               ports=[port("http", 80, protocol, targetPort=8080, nodePort=30080)], **spec)


def ds_slices(name="web", protocol="TCP", v4=("172.16.1.10",), v6=("fd00:10:244:1::a",)):
    p = [port("http", 8080, protocol)]
    return [slice_("default", name, [ep(ip, "w1-k8s") for ip in v4], p, n=4, address_type=IPV4),
            slice_("default", name, [ep(ip, "w1-k8s") for ip in v6], p, n=6, address_type=IPV6)]


FAMILIES = {IPV4: (["192.168.1.101"], "172.16.0.0/16"), IPV6: (["fd00:192:168:1::101"], "fd00:10:244::/56")}


def test_a_dual_stack_service_is_in_both_views_with_its_own_family_everywhere():
    service = ds_service(type="LoadBalancer", externalIPs=["192.168.1.200", "fd00:192:168:1::200"],
                         status={"loadBalancer": {"ingress": [{"ip": "192.168.1.240"},
                                                              {"ip": "fd00:192:168:1::240"}]}})
    views = build_views([service], ds_slices(), node_name="w1-k8s", families=FAMILIES)
    assert list(views) == [IPV4, IPV6]
    (p4,), (p6,) = views[IPV4].services["default/web"], views[IPV6].services["default/web"]
    assert (p4.cluster_ip, p4.external_ips, p4.load_balancer_ips) == ("10.96.0.50", ("192.168.1.200",),
                                                                      ("192.168.1.240",))
    assert (p6.cluster_ip, p6.external_ips, p6.load_balancer_ips) == ("fd00:10:96::50", ("fd00:192:168:1::200",),
                                                                      ("fd00:192:168:1::240",))
    assert [e.endpoint for e in p4.endpoints] == ["172.16.1.10:8080"]
    assert [e.endpoint for e in p6.endpoints] == ["[fd00:10:244:1::a]:8080"]
    assert p6.node_port == p4.node_port == 30080 and p6.endpoints[0].is_local
    o = views[IPV6].options
    assert (o.ip_family, o.node_ips, o.cluster_cidr) == (IPV6, ("fd00:192:168:1::101",), "fd00:10:244::/56")


def test_a_service_is_only_in_the_views_of_its_families():
    services = [ds_service("v4only", families=(IPV4,)), ds_service("v6only", families=(IPV6,)),
                ds_service("v6first", families=(IPV6, IPV4)),
                # written before ipFamilies existed: its clusterIP's family
                svc("default", "legacy", clusterIP="10.96.0.77", ports=[port()]),
                svc("default", "headless", clusterIP="None", clusterIPs=["None"], ipFamilies=[IPV4, IPV6],
                    ports=[port()])]
    views = build_views(services, [], node_name="w1-k8s", families=FAMILIES)
    assert sorted(views[IPV4].services) == ["default/legacy", "default/v4only", "default/v6first"]
    assert sorted(views[IPV6].services) == ["default/v6first", "default/v6only"]
    assert views[IPV4].services["default/v6first"][0].cluster_ip == "10.96.0.50"
    assert views[IPV6].services["default/v6first"][0].cluster_ip == "fd00:10:96::50"


def test_each_familys_rules_use_its_node_address_and_pod_cidr():
    views = build_views([ds_service()], ds_slices(), node_name="w1-k8s", families=FAMILIES)
    nft6 = nftables_render(views[IPV6], NftSettings(service_cidrs=("10.96.0.0/12", "fd00:10:96::/112"))).text()
    assert "add element ip6 kube-proxy nodeport-ips { fd00:192:168:1::101 }" in nft6
    assert "ip6 daddr fd00:10:96::50 ip6 saddr != fd00:10:244::/56 jump mark-for-masquerade" in nft6
    assert "ip6 daddr { fd00:10:96::/112 } drop" in nft6
    assert "10.96" not in nft6 and "172.16" not in nft6
    ipt6 = iptables_render(views[IPV6]).payload()
    assert "-d fd00:10:96::50 --dport 80 ! -s fd00:10:244::/56 -j KUBE-MARK-MASQ" in ipt6
    assert "--to-destination [fd00:10:244:1::a]:8080" in ipt6
    assert "KUBE-FIREWALL" not in ipt6   # no localhost NodePorts in IPv6
    assert iptables_render(views[IPV4]).payload() == iptables_render(
        build_view([ds_service()], ds_slices(), node_name="w1-k8s", node_ips=["192.168.1.101"],
                   cluster_cidr="172.16.0.0/16")).payload()


def test_stale_udp_conntrack_of_ipv6_names_the_family():
    two = ds_slices(protocol="UDP", v6=("fd00:10:244:1::a", "fd00:10:244:1::b"))
    views = build_views([ds_service(protocol="UDP")], two, node_name="w1-k8s", families=FAMILIES)
    after = build_views([ds_service(protocol="UDP")], ds_slices(protocol="UDP", v6=("fd00:10:244:1::a",)),
                        node_name="w1-k8s", families=FAMILIES)
    assert [d.argv() for d in stale_udp_conntrack(views[IPV6], after[IPV6])] == [
        ["-D", "-p", "udp", "--orig-dst", "fd00:10:96::50", "--orig-port-dst", "80",
         "--reply-src", "fd00:10:244:1::b", "-f", "ipv6"],
        ["-D", "-p", "udp", "--orig-port-dst", "30080", "--reply-src", "fd00:10:244:1::b", "-f", "ipv6"]]
    assert stale_udp_conntrack(views[IPV4], after[IPV4]) == []


# --------------------------------------------------------------------------- every node, both families
class Store:
    def __init__(self, services, slices):
        self.objects = {"Service": services, "EndpointSlice": slices}
        self.generation = {"Service": 1, "EndpointSlice": 1}

    def list(self, kind):
        return list(self.objects[kind])

    def find(self, kind, namespace, name):
        return next((o for o in self.objects[kind] if (o.metadata.namespace, o.metadata.name) == (namespace, name)),
                    None)

    def select(self, kind, namespace, selector):
        return [o for o in self.objects[kind] if o.metadata.namespace == namespace
                and all((o.metadata.labels or {}).get(k) == v for k, v in selector.items())]


def kube_proxy(lab, runner):
    net = types.SimpleNamespace(nodes={n.name: n for n in lab.spec.nodes}, node_netns=lambda n: f"ne-ds-{n}")
    return KubeProxy(lab, net, runner)


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_iptables_mode_loads_each_family_with_its_own_restore_of_one_backend(backend):
    runner = FakeRunner()
    kp = kube_proxy(dual_lab("iptables", backend), runner)
    asyncio.run(kp.sync(Store([ds_service()], ds_slices())))
    w1 = [c for c in runner.calls if c.netns == "ne-ds-w1-k8s"]
    assert [c.argv for c in w1] == [(f"iptables-{backend}-restore", "--noflush", "-w"),
                                    (f"ip6tables-{backend}-restore", "--noflush", "-w")]
    assert "-d 10.96.0.50 --dport 80" in w1[0].stdin and "fd00" not in w1[0].stdin
    assert "-d fd00:10:96::50 --dport 80" in w1[1].stdin and "10.96.0.50" not in w1[1].stdin
    assert w1[1].stdin.startswith("*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n")   # base chains too
    n = kp.nodes["w1-k8s"]
    assert n.syncs == 1 and n.view.options.ip_family == IPV4
    assert n.proxier(IPV6).view.options.node_ips == ("fd00:192:168:1::101",)
    # a change syncs both families, each with a partial restore
    runner.calls.clear()
    store = Store([ds_service()], ds_slices(v6=("fd00:10:244:1::a", "fd00:10:244:1::b")))
    kp.note_change("EndpointSlice", "MODIFIED", store.objects["EndpointSlice"][1])
    store.generation["EndpointSlice"] += 1
    asyncio.run(kp.sync(store))
    w1 = [c for c in runner.calls if c.netns == "ne-ds-w1-k8s"]
    assert [c.argv[0] for c in w1] == [f"ip6tables-{backend}-restore"]   # IPv4 had nothing to send
    assert "KUBE-FORWARD" not in w1[0].stdin and "[fd00:10:244:1::b]:8080" in w1[0].stdin


def test_nftables_mode_loads_table_ip6_beside_table_ip_and_clears_ipv6_udp_flows():
    runner = FakeRunner()
    kp = kube_proxy(dual_lab("nftables"), runner)
    asyncio.run(kp.sync(Store([ds_service(protocol="UDP")], ds_slices(protocol="UDP"))))
    w1 = [c for c in runner.calls if c.netns == "ne-ds-w1-k8s"]
    loads = [c for c in w1 if c.argv == ("nft", "-f", "-")]
    assert len(loads) == 2
    assert "add table ip kube-proxy" in loads[0].stdin and " ip6 " not in loads[0].stdin
    assert "add table ip6 kube-proxy" in loads[1].stdin
    assert "ip6 daddr { fd00:10:96::/112 } drop" in loads[1].stdin
    assert "add element ip6 kube-proxy nodeport-ips { fd00:192:168:1::101 }" in loads[1].stdin
    conntrack = [c.argv for c in w1 if c.argv[0] == "conntrack"]
    assert ("conntrack", "-D", "-p", "udp", "--orig-port-dst", "30080", "-f", "ipv6") in conntrack
    assert ("conntrack", "-D", "-p", "udp", "--orig-port-dst", "30080") in conntrack
    runner.answer(("nft", "list", "table", "ip", "kube-proxy"), "table ip kube-proxy {}\n")
    runner.answer(("nft", "list", "table", "ip6", "kube-proxy"), "table ip6 kube-proxy {}\n")
    assert kp.rules("w1-k8s") == "table ip kube-proxy {}\n# IPv6\ntable ip6 kube-proxy {}\n"
    assert kp.rules("w1-k8s", IPV6) == "table ip6 kube-proxy {}\n"


def test_adopt_reads_each_familys_rules():
    runner = FakeRunner({("iptables-nft-save",): "*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n",
                         ("ip6tables-nft-save",): "*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n"})
    kp = kube_proxy(dual_lab(), runner)
    kp.adopt()
    assert sorted({c.argv[0] for c in runner.calls}) == ["ip6tables-nft-save", "iptables-nft-save"]
    assert all(fp.backend.initialized for n in kp.nodes.values() for fp in n.proxiers.values())


def test_an_ipv4_only_lab_and_ipvs_have_the_ipv4_proxier_only():
    v4 = default_lab(Lab.model_validate({"spec": {}}))
    assert proxy_families(v4) == [IPV4]
    assert proxy_families(dual_lab("ipvs")) == [IPV4]
    assert proxy_families(dual_lab("nftables")) == [IPV4, IPV6]
    runner = FakeRunner()
    kp = kube_proxy(v4, runner)
    asyncio.run(kp.sync(Store([ds_service(families=(IPV4,))], ds_slices()[:1])))
    assert {c.argv[0] for c in runner.calls} == {"iptables-nft-restore"}


# --------------------------------------------------------------------------- netemu render
def _render(tmp_path, capsys, text, *argv):
    from netemu.cli.main import main

    f = tmp_path / "objects.yaml"
    f.write_text(textwrap.dedent(text))
    assert main(["render", *argv, "-f", str(f), "--node-name", "w1-k8s"]) == 0
    return capsys.readouterr().out


IPV6_SERVICE = """\
    apiVersion: v1
    kind: Service
    metadata: {name: web6, namespace: default}
    spec:
      type: NodePort
      ipFamilies: [IPv6]
      clusterIP: fd00:10:96::60
      clusterIPs: [fd00:10:96::60]
      ports: [{name: http, port: 80, nodePort: 30081, targetPort: 8080}]
    ---
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: {name: web6-x, namespace: default, labels: {kubernetes.io/service-name: web6}}
    addressType: IPv6
    endpoints: [{addresses: ["fd00:10:244:1::a"], nodeName: w1-k8s}]
    ports: [{name: http, port: 8080}]
    """


def test_render_an_ipv6_service_in_its_family(tmp_path, capsys):
    out = _render(tmp_path, capsys, IPV6_SERVICE, "iptables", "--node-ip", "192.168.1.101,fd00:192:168:1::101",
                  "--cluster-cidr", "172.16.0.0/16,fd00:10:244::/56")
    assert out.startswith("*filter\n") and "# IPv" not in out
    assert "-d fd00:10:96::60 --dport 80 ! -s fd00:10:244::/56 -j KUBE-MARK-MASQ" in out
    assert "--to-destination [fd00:10:244:1::a]:8080" in out
    out = _render(tmp_path, capsys, IPV6_SERVICE, "nftables", "--service-cidr", "fd00:10:96::/112")
    assert "add table ip6 kube-proxy" in out and "add table ip " not in out


def test_render_a_dual_stack_service_in_both_families(tmp_path, capsys):
    text = IPV6_SERVICE
    for a, b in (("ipFamilies: [IPv6]", "ipFamilies: [IPv4, IPv6]\n      ipFamilyPolicy: PreferDualStack"),
                 ("clusterIP: fd00:10:96::60", "clusterIP: 10.96.0.60"),
                 ("clusterIPs: [fd00:10:96::60]", "clusterIPs: [10.96.0.60, fd00:10:96::60]")):
        text = text.replace(a, b)
    out = _render(tmp_path, capsys, text, "iptables", "--node-ip", "192.168.1.101", "--node-ip",
                  "fd00:192:168:1::101", "--jumps")
    v4, v6 = out.split("# IPv6: ip6tables-restore --noflush\n")
    assert v4.startswith("# IPv4: iptables-restore --noflush\n")
    assert "-d 10.96.0.60 --dport 80" in v4 and "fd00" not in v4   # the IPv6 slice is not IPv4's
    assert "-d fd00:10:96::60 --dport 80" in v6 and "--to-destination [fd00:10:244:1::a]:8080" in v6
    assert v6.count("-j KUBE-SERVICES") == v4.count("-j KUBE-SERVICES") > 0    # each has its jumps


# --------------------------------------------------------------------------- netemu trace
@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_trace_follows_each_destination_through_its_familys_rules(monkeypatch, mode):
    from netemu.dataplane import capture
    from netemu.dataplane.proxy import trace as trace_mod
    from netemu.dataplane.proxy.iptables.render import base_payload

    views = build_views([ds_service()], ds_slices(), node_name="w1-k8s", families=FAMILIES)
    saved = {f: base_payload() + iptables_render(v).payload() for f, v in views.items()}
    runner = FakeRunner({("iptables-nft-save",): saved[IPV4], ("ip6tables-nft-save",): saved[IPV6]})
    kp = kube_proxy(dual_lab(mode), runner)
    asyncio.run(kp.sync(Store([ds_service()], ds_slices())))
    monkeypatch.setattr(capture, "local_addresses", lambda netns: {"192.168.1.101", "fd00:192:168:1::101"})
    monkeypatch.setattr(capture, "conntrack_entries", lambda *a, **k: [])
    dests = [{"via": "NodePort", "ip": ip, "port": 30080, "proto": "tcp"}
             for ip in ("fd00:192:168:1::101", "192.168.1.101")]
    doc = trace_mod.trace(kp, "w1-k8s", mode, "fd00:192:168:1::1", dests)
    assert [r["dnat"] for r in doc["results"]] == [["[fd00:10:244:1::a]:8080"], ["172.16.1.10:8080"]]


def test_trace_destinations_of_a_dual_stack_service_cover_both_families():
    from netemu.cli.trace_cmds import _node_ips, destinations

    node = {"metadata": {"name": "w1-k8s"}, "status": {"addresses": [
        {"type": "InternalIP", "address": "192.168.1.101"}, {"type": "InternalIP", "address": "fd00:192:168:1::101"},
        {"type": "Hostname", "address": "w1-k8s"}]}}
    ips = _node_ips([node])
    assert ips == {"w1-k8s": ["192.168.1.101", "fd00:192:168:1::101"]}
    dual = ds_service().model_dump(by_alias=True, exclude_none=True)
    assert [(d["via"].split(" (")[0], d["ip"]) for d in destinations(dual, ips["w1-k8s"], None)] == [
        ("ClusterIP", "10.96.0.50"), ("ClusterIP", "fd00:10:96::50"),
        ("NodePort 30080", "192.168.1.101"), ("NodePort 30080", "fd00:192:168:1::101")]
    # an IPv4 Service: the IPv6 kube-proxy ignores it, so no NodePort on the node's IPv6 address
    v4 = ds_service(families=(IPV4,)).model_dump(by_alias=True, exclude_none=True)
    assert [d["ip"] for d in destinations(v4, ips["w1-k8s"], None)] == ["10.96.0.50", "192.168.1.101"]
    legacy = {"spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80, "nodePort": 30001}]}}
    assert [d["ip"] for d in destinations(legacy, "192.168.1.101", None)] == ["10.96.0.9", "192.168.1.101"]
