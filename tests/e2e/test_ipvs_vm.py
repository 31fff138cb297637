"""kube-proxy's IPVS mode with real traffic, in a throwaway VM (this machine's kernel has no ip_vs).

The host renders an IPVS-mode node and plans its syncs with netemu's own code (IpvsSyncer: the
commands netemu's IPVS applier runs); the VM (Debian's kernel under QEMU/TCG, the host's / as its
read-only root, see netemu/vmtest) builds a node namespace with two pods and a client, replays the
plans and curls the Services. Skipped only when QEMU cannot run at all here (not installed and not
installable, or no TCG). Takes ~20-30 s plus, the first time, ~10 s to build the kit.
"""
from __future__ import annotations

import re
import time

import pytest

from netemu.dataplane.proxy.ipvs.sync import IpvsState, parse_ipvsadm_list
from netemu.vmtest import ipvs_scenario as scn
from netemu.vmtest.kit import run_script

pytestmark = pytest.mark.e2e

A, B = scn.PODS[0][1], scn.PODS[1][1]


@pytest.fixture(scope="module")
def vm(kit, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ipvs-vm")
    t0 = time.monotonic()
    sc = scn.write(workdir, scn.Scenario.plan(kit.kernel))
    plan_s = time.monotonic() - t0
    run = run_script(kit, workdir, "guest.sh", timeout=300, modules=scn.GUEST_MODULES)
    print(f"plans rendered in {plan_s * 1000:.0f} ms; VM run {run.seconds:.1f} s "
          f"(guest ready at {run.ready_at} s, script done at {run.exit_at} s)")
    assert run.rc == 0, f"guest script failed (rc={run.rc}):\n{run.output[-6000:]}"
    return sc, workdir, scn.read_curls(workdir), run


def result(workdir, name: str) -> str:
    return (workdir / "results" / name).read_text()


def test_kernel_state_is_what_was_rendered(vm):
    sc, workdir, _, _ = vm
    observed = IpvsState.parse(result(workdir, "ipvsadm-1.txt"),
                               [line.split()[3].split("/")[0] for line in result(workdir, "addr-1.txt").splitlines()],
                               result(workdir, "ipset-1.txt"), result(workdir, "iptables-1.txt"))
    expected = sc.first.state
    assert observed.services == expected.services
    assert observed.dests == expected.dests
    assert observed.addresses == expected.addresses == frozenset({scn.SVC_IP, scn.STICKY_IP})
    for name, members in expected.ipsets.items():
        assert observed.ipsets.get(name) == members, name
    assert observed.jumps == expected.jumps            # kube-proxy's 9 jumps from the built-in chains
    # every rule rendered is in the kernel, chain by chain (iptables-save shows marks as 0x4000)
    saved = result(workdir, "iptables-1.txt")
    for table, rules in (("nat", sc.ruleset.nat_rules), ("filter", sc.ruleset.filter_rules)):
        section = saved.split(f"*{table}\n", 1)[1].split("COMMIT", 1)[0]
        for chain_name in {r.split()[1] for r in rules}:
            have = [x for x in section.splitlines() if x.startswith(f"-A {chain_name} ")]
            want = [r for r in rules if r.split()[1] == chain_name]
            assert len(have) == len(want), (chain_name, have, want)
    # kube-ipvs0 is a dummy link left down, as kube-proxy leaves it
    link = result(workdir, "link-1.txt")
    assert "dummy" in link and "state DOWN" in link
    sysctl = dict(re.findall(r"^(\S+) = (\S+)$", result(workdir, "sysctl-1.txt"), re.M))
    assert sysctl == {k: v for k, v in sc.ruleset.sysctls}


def test_cluster_ip_and_node_port_balance_over_both_pods(vm):
    _, _, curls, _ = vm
    for name in ("clusterip-from-client", "nodeport-from-client"):
        assert curls[name] and "FAIL" not in curls[name], (name, curls[name])
        assert set(curls[name]) == {A, B}, (name, curls[name])
        # rr: strictly alternating
        assert all(x != y for x, y in zip(curls[name], curls[name][1:])), (name, curls[name])


def test_from_pods_and_from_the_node(vm):
    _, _, curls, _ = vm
    # pod a reaches the Service whichever pod answers, itself included (KUBE-LOOP-BACK masquerade)
    assert set(curls["clusterip-from-pod-a"]) == {A, B}, curls["clusterip-from-pod-a"]
    assert set(curls["clusterip-from-node"]) <= {A, B} and "FAIL" not in curls["clusterip-from-node"]
    # NodePorts are on every node address, the bridge's included
    assert set(curls["nodeport-on-bridge-from-pod-b"]) == {A, B}, curls["nodeport-on-bridge-from-pod-b"]


def test_host_ports_are_not_reachable_through_a_vip(vm):
    _, _, curls, _ = vm
    assert curls["hostport-via-nodeip"] == ["node-host-port"]
    assert curls["hostport-via-vip"] == ["FAIL"]      # KUBE-IPVS-FILTER rejects it


def test_client_ip_affinity(vm):
    _, _, curls, _ = vm
    answers = curls["affinity-from-client"]
    assert len(answers) == 3 and len(set(answers)) == 1 and answers[0] in (A, B), answers


def test_terminating_endpoint_gets_weight_zero(vm):
    sc, workdir, curls, _ = vm
    assert curls["clusterip-after-update"] == [A] * 3
    assert curls["nodeport-after-update"] == [A] * 3
    # with expire_quiescent_template=1 the ClientIP template to a weight-0 server expires
    assert curls["affinity-after-update"] == [A] * 2
    observed = IpvsState.parse(result(workdir, "ipvsadm-2.txt"), None, "")
    assert observed.dests == sc.update.state.dests
    pod_b = (scn.PODS[1][2], scn.TARGET_PORT)
    assert all(d[pod_b] == 0 for d in observed.dests.values())
    # kept because it still has connections (graceful termination), which is what the applier checks
    conns = parse_ipvsadm_list(result(workdir, "ipvsadm-list-2.txt"))
    assert conns[(("TCP", scn.SVC_IP, scn.SVC_PORT), pod_b)] > 0


def test_netemu_ipvs_applier_on_the_real_kernel(vm):
    """IpvsBackend itself (as KubeProxy drives it) in the guest: its first sync observes the kernel
    left by the replayed plans (pod b at weight 0) and diffs against it; its second one removes
    pod b from a Service whose connections to it are gone, which its reaping deletes at once."""
    import json

    sc, workdir, curls, _ = vm
    if (workdir / "results" / "backend.skipped").exists():
        pytest.skip(result(workdir, "backend.skipped").strip())
    assert result(workdir, "backend.rc").strip() == "0", result(workdir, "backend.err")[-3000:]
    out = json.loads(result(workdir, "backend.json"))
    first, second = out["applies"]
    assert first["full"] and not second["full"]
    assert first["graceful"] == second["graceful"] == []
    observed = IpvsState.parse(result(workdir, "ipvsadm-3.txt"), None, "")
    pod_a, pod_b = (scn.PODS[0][2], scn.TARGET_PORT), (scn.PODS[1][2], scn.TARGET_PORT)
    extra = ("TCP", scn.EXTRA_IP, scn.SVC_PORT)
    assert observed.dests[extra] == {pod_a: 1}
    assert all(d == {pod_a: 1, pod_b: 1} for k, d in observed.dests.items() if k != extra), observed.dests
    assert curls["extra-after-backend"] == [A] * 2
    assert set(curls["clusterip-after-backend"]) == {A, B}
    assert "# ipvsadm-save -n\n-A -t" in result(workdir, "backend-rules.txt")
    print(f"IpvsBackend in the guest: import {out['import_seconds']:.1f} s, "
          f"syncs {first['seconds']} s (observe + full) and {second['seconds']} s (incremental + reap)")
