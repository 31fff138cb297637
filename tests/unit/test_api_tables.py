"""Server-side Tables (meta.k8s.io/v1): the columns and cells Kubernetes 1.32's printers give kubectl."""
from __future__ import annotations

import pytest

from netemu.spec import registry
from netemu.api import tables as T

NOW = T.parse_time("2026-01-10T12:00:00Z")


def ago(seconds: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(NOW - seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(name="x", age=300, **kw) -> dict:
    return {"name": name, "namespace": "default", "creationTimestamp": ago(age), **kw}


def columns(t: dict) -> list[tuple[str, int]]:
    return [(c["name"], c["priority"]) for c in t["columnDefinitions"]]


def cells(kind: str, obj: dict, group: str = "") -> list:
    return T.table(kind, group, [obj], NOW)["rows"][0]["cells"]


def default_cols(names: list[str], wide: list[str] = ()) -> list[tuple[str, int]]:
    return [(n, 0) for n in names] + [(n, 1) for n in wide]


# ------------------------------------------------------------------------------- columns
# (kind, group) -> what `kubectl get` shows, then what only `-o wide` adds (printers.go, 1.32)
COLUMNS = {
    ("Pod", ""): (["Name", "Ready", "Status", "Restarts", "Age"], ["IP", "Node", "Nominated Node", "Readiness Gates"]),
    ("Node", ""): (["Name", "Status", "Roles", "Age", "Version"],
                   ["Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"]),
    ("Deployment", "apps"): (["Name", "Ready", "Up-to-date", "Available", "Age"], ["Containers", "Images", "Selector"]),
    ("ReplicaSet", "apps"): (["Name", "Desired", "Current", "Ready", "Age"], ["Containers", "Images", "Selector"]),
    ("DaemonSet", "apps"): (["Name", "Desired", "Current", "Ready", "Up-to-date", "Available", "Node Selector", "Age"],
                            ["Containers", "Images", "Selector"]),
    ("StatefulSet", "apps"): (["Name", "Ready", "Age"], ["Containers", "Images"]),
    ("Job", "batch"): (["Name", "Status", "Completions", "Duration", "Age"], ["Containers", "Images", "Selector"]),
    ("CronJob", "batch"): (["Name", "Schedule", "Timezone", "Suspend", "Active", "Last Schedule", "Age"],
                           ["Containers", "Images", "Selector"]),
    ("Service", ""): (["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"], ["Selector"]),
    ("Endpoints", ""): (["Name", "Endpoints", "Age"], []),
    ("EndpointSlice", "discovery.k8s.io"): (["Name", "AddressType", "Ports", "Endpoints", "Age"], []),
    ("Namespace", ""): (["Name", "Status", "Age"], []),
    ("ConfigMap", ""): (["Name", "Data", "Age"], []),
    ("Secret", ""): (["Name", "Type", "Data", "Age"], []),
    ("ServiceAccount", ""): (["Name", "Secrets", "Age"], []),
    ("HorizontalPodAutoscaler", "autoscaling"): (
        ["Name", "Reference", "Targets", "MinPods", "MaxPods", "Replicas", "Age"], []),
    ("Ingress", "networking.k8s.io"): (["Name", "Class", "Hosts", "Address", "Ports", "Age"], []),
    ("IngressClass", "networking.k8s.io"): (["Name", "Controller", "Parameters", "Age"], []),
    ("PersistentVolumeClaim", ""): (["Name", "Status", "Volume", "Capacity", "Access Modes", "StorageClass",
                                     "VolumeAttributesClass", "Age"], ["VolumeMode"]),
    ("RoleBinding", "rbac.authorization.k8s.io"): (["Name", "Role", "Age"], ["Users", "Groups", "ServiceAccounts"]),
    ("ClusterRoleBinding", "rbac.authorization.k8s.io"): (["Name", "Role", "Age"],
                                                          ["Users", "Groups", "ServiceAccounts"]),
    ("PodDisruptionBudget", "policy"): (["Name", "Min Available", "Max Unavailable", "Allowed Disruptions", "Age"],
                                        []),
    ("ComponentStatus", ""): (["Name", "Status", "Message", "Error"], []),
    ("Lease", "coordination.k8s.io"): (["Name", "Holder", "Age"], []),
    ("StorageClass", "storage.k8s.io"): (
        ["Name", "Provisioner", "ReclaimPolicy", "VolumeBindingMode", "AllowVolumeExpansion", "Age"], []),
    # PreemptionPolicy has priority 0 and the server prints wide: `get pc` shows it
    ("PriorityClass", "scheduling.k8s.io"): (["Name", "Value", "Global-Default", "Age", "PreemptionPolicy"], []),
    # no printer upstream: the generic default table
    ("Role", "rbac.authorization.k8s.io"): (["Name", "Created At"], []),
    ("ClusterRole", "rbac.authorization.k8s.io"): (["Name", "Created At"], []),
    ("CustomResourceDefinition", "apiextensions.k8s.io"): (["Name", "Created At"], []),
    # MetalLB's CRDs declare these columns and no Age
    ("IPAddressPool", "metallb.io"): (["Name", "Auto Assign", "Avoid Buggy IPs", "Addresses"], []),
}


@pytest.mark.parametrize("kind,group", list(COLUMNS))
def test_columns_and_priorities(kind, group):
    names, wide = COLUMNS[(kind, group)]
    t = T.table(kind, group, [], NOW)
    assert columns(t) == default_cols(names, wide)
    assert t["columnDefinitions"][0]["format"] == "name"  # kubectl finds the name column by its format


def test_every_row_carries_every_cell():
    # the server prints with Wide=true; kubectl drops the priority>0 cells itself
    for (kind, group) in COLUMNS:
        printer = T.printer_for(kind, group)
        obj = {"metadata": meta()}
        assert len(printer.cells(obj, NOW)) == len(printer.columns), kind


def test_event_columns_and_order():
    t = T.table("Event", "", [], NOW)
    assert columns(t) == [("Last Seen", 0), ("Type", 0), ("Reason", 0), ("Object", 0), ("Subobject", 1),
                          ("Source", 1), ("Message", 0), ("First Seen", 1), ("Count", 1), ("Name", 1)]
    assert t["columnDefinitions"][-1]["format"] == "name"


def test_l2advertisement_node_selectors_are_wide_only():
    t = T.table("L2Advertisement", "metallb.io", [], NOW)
    assert columns(t) == [("Name", 0), ("IPAddressPools", 0), ("IPAddressPool Selectors", 0), ("Interfaces", 0),
                          ("Node Selectors", 10)]


# ------------------------------------------------------------------------------- AGE
@pytest.mark.parametrize("seconds,text", [
    (5, "5s"), (119, "119s"), (125, "2m5s"), (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"),
    (5 * 3600 + 60, "5h1m"), (30 * 3600, "30h"), (50 * 3600, "2d2h"), (7 * 86400, "7d"), (9 * 86400, "9d"),
    (800 * 86400, "2y70d"), (3 * 365 * 86400, "3y"), (9 * 365 * 86400, "9y"),
    (-1.5, "0s"), (-3, "<invalid>"),  # up to 2s of clock skew reads as now
])
def test_human_duration(seconds, text):
    assert T.human_duration(seconds) == text


def test_age_cell_is_computed_server_side():
    assert cells("ConfigMap", {"metadata": meta(age=2 * 86400 + 3 * 3600)})[-1] == "2d3h"
    assert cells("ConfigMap", {"metadata": {"name": "x"}})[-1] == "<unknown>"
    # fractional and offset times (MicroTime, non-UTC) parse too
    assert T.parse_time("2026-01-10T13:00:00.5+01:00") == NOW + 0.5


# ------------------------------------------------------------------------------- pods
def pod(status: dict, spec: dict | None = None, **metakw) -> dict:
    return {"metadata": meta("p", **metakw),
            "spec": spec or {"nodeName": "w1", "containers": [{"name": "c", "image": "nginx"}]}, "status": status}


def cstatus(state: dict, ready=False, restarts=0, name="c", **kw) -> dict:
    return {"name": name, "ready": ready, "restartCount": restarts, "state": state, **kw}


RUNNING = {"phase": "Running", "podIP": "10.244.1.5",
           "containerStatuses": [cstatus({"running": {}}, ready=True)]}


def test_pod_running_row():
    assert cells("Pod", pod(RUNNING)) == ["p", "1/1", "Running", "0", "5m", "10.244.1.5", "w1", "<none>", "<none>"]


@pytest.mark.parametrize("status,expect", [
    ({"phase": "Pending"}, ("0/1", "Pending")),
    ({"phase": "Pending", "containerStatuses": [cstatus({"waiting": {"reason": "ContainerCreating"}})]},
     ("0/1", "ContainerCreating")),
    ({"phase": "Running", "containerStatuses": [cstatus({"waiting": {"reason": "CrashLoopBackOff"}}, restarts=3)]},
     ("0/1", "CrashLoopBackOff")),
    ({"phase": "Succeeded", "containerStatuses": [cstatus({"terminated": {"exitCode": 0, "reason": "Completed"}})]},
     ("0/1", "Completed")),
    ({"phase": "Failed", "containerStatuses": [cstatus({"terminated": {"exitCode": 137}})]},
     ("0/1", "ExitCode:137")),
    ({"phase": "Failed", "containerStatuses": [cstatus({"terminated": {"exitCode": 0, "signal": 9}})]},
     ("0/1", "Signal:9")),
    ({"phase": "Failed", "reason": "Evicted"}, ("0/1", "Evicted")),
    ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]},
     ("0/1", "SchedulingGated")),
])
def test_pod_status(status, expect):
    assert tuple(cells("Pod", pod(status))[1:3]) == expect


def test_pod_terminating_unless_finished():
    assert cells("Pod", pod(RUNNING, deletionTimestamp=ago(1)))[2] == "Terminating"
    done = {"phase": "Succeeded", "containerStatuses": [cstatus({"terminated": {"exitCode": 0, "reason": "Completed"}})]}
    assert cells("Pod", pod(done, deletionTimestamp=ago(1)))[2] == "Completed"
    assert cells("Pod", pod({**RUNNING, "reason": "NodeLost"}, deletionTimestamp=ago(1)))[2] == "Unknown"


def test_pod_init_containers():
    spec = {"nodeName": "w1", "initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "c"}]}
    waiting = {"phase": "Pending", "initContainerStatuses": [
        cstatus({"terminated": {"exitCode": 0, "reason": "Completed"}}, name="i1"),
        cstatus({"waiting": {"reason": "PodInitializing"}}, name="i2")],
        "containerStatuses": [cstatus({"waiting": {"reason": "PodInitializing"}})]}
    assert cells("Pod", pod(waiting, spec))[1:3] == ["0/1", "Init:1/2"]
    crash = {"phase": "Pending", "initContainerStatuses": [
        cstatus({"waiting": {"reason": "CrashLoopBackOff"}}, name="i1", restarts=4)]}
    assert cells("Pod", pod(crash, spec))[1:4] == ["0/1", "Init:CrashLoopBackOff", "4"]
    failed = {"phase": "Pending", "initContainerStatuses": [cstatus({"terminated": {"exitCode": 2}}, name="i1")]}
    assert cells("Pod", pod(failed, spec))[2] == "Init:ExitCode:2"


def test_pod_sidecar_counts_in_ready_and_total():
    spec = {"nodeName": "w1", "initContainers": [{"name": "side", "restartPolicy": "Always"}],
            "containers": [{"name": "c"}]}
    status = {"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
              "initContainerStatuses": [cstatus({"running": {}}, ready=True, name="side", started=True, restarts=1)],
              "containerStatuses": [cstatus({"running": {}}, ready=True)]}
    assert cells("Pod", pod(status, spec))[1:4] == ["2/2", "Running", "1"]


def test_pod_restarts_say_when():
    status = {"phase": "Running", "containerStatuses": [cstatus(
        {"running": {}}, ready=True, restarts=2, lastState={"terminated": {"exitCode": 1, "finishedAt": ago(300)}})]}
    assert cells("Pod", pod(status))[3] == "2 (5m ago)"


def test_pod_completed_with_a_running_container():
    # one container finished, one still runs: Running if the pod is Ready, else NotReady
    spec = {"nodeName": "w1", "containers": [{"name": "a"}, {"name": "b"}]}
    statuses = [cstatus({"terminated": {"exitCode": 0, "reason": "Completed"}}, name="a"),
                cstatus({"running": {}}, ready=True, name="b")]
    ready = {"phase": "Running", "containerStatuses": statuses, "conditions": [{"type": "Ready", "status": "True"}]}
    assert cells("Pod", pod(ready, spec))[1:3] == ["1/2", "Running"]
    assert cells("Pod", pod({**ready, "conditions": []}, spec))[2] == "NotReady"


def test_pod_status_is_the_first_containers_reason():
    # printPod walks the statuses backwards, so the first container's reason is the one shown
    spec = {"nodeName": "w1", "containers": [{"name": "a"}, {"name": "b"}]}
    status = {"phase": "Running", "containerStatuses": [
        cstatus({"waiting": {"reason": "CrashLoopBackOff"}}, name="a", restarts=5),
        cstatus({"waiting": {"reason": "ContainerCreating"}}, name="b")]}
    assert cells("Pod", pod(status, spec))[1:4] == ["0/2", "CrashLoopBackOff", "5"]


def test_pod_wide_cells_and_completed_row_condition():
    status = {**RUNNING, "podIPs": [{"ip": "10.244.1.9"}, {"ip": "fd00::9"}], "nominatedNodeName": "w2",
              "conditions": [{"type": "example.com/gate", "status": "True"}]}
    spec = {"nodeName": "w1", "containers": [{"name": "c"}],
            "readinessGates": [{"conditionType": "example.com/gate"}, {"conditionType": "other"}]}
    assert cells("Pod", pod(status, spec))[5:] == ["10.244.1.9", "w1", "w2", "1/2"]
    done = T.table("Pod", "", [pod({"phase": "Succeeded"})], NOW)["rows"][0]
    assert done["conditions"][0]["type"] == "Completed" and done["conditions"][0]["reason"] == "Succeeded"


# ------------------------------------------------------------------------------- other kinds
def test_node_row():
    node = {"metadata": meta("w1", labels={"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "x"}),
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.4", "osImage": "Debian", "kernelVersion": "6.1",
                                    "containerRuntimeVersion": "containerd://1.7"}}}
    assert cells("Node", node) == ["w1", "Ready,SchedulingDisabled", "control-plane,x", "5m", "v1.32.4",
                                   "192.168.1.10", "<none>", "Debian", "6.1", "containerd://1.7"]
    bare = {"metadata": meta("w2"), "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
    assert cells("Node", bare)[1:3] == ["NotReady", "<none>"]
    assert cells("Node", {"metadata": meta("w3")})[1] == "Unknown"


def test_deployment_and_replicaset_rows():
    tmpl = {"spec": {"containers": [{"name": "a", "image": "nginx:1"}, {"name": "b", "image": "busybox"}]}}
    sel = {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In",
                                                               "values": ["z", "b"]}]}
    d = {"metadata": meta("web"), "spec": {"replicas": 3, "selector": sel, "template": tmpl},
         "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert cells("Deployment", d, "apps") == ["web", "2/3", 3, 2, "5m", "a,b", "nginx:1,busybox",
                                              "app=web,tier in (b,z)"]
    rs = {"metadata": meta("web-abc"), "spec": {"selector": sel, "template": tmpl}, "status": {"replicas": 1}}
    assert cells("ReplicaSet", rs, "apps")[:4] == ["web-abc", 1, 1, 0]  # replicas defaults to 1


def test_service_rows():
    lb = {"metadata": meta("lb"), "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.20"],
                                           "ports": [{"port": 80, "nodePort": 31000, "protocol": "TCP"}],
                                           "selector": {"b": "2", "a": "1"}},
          "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.241"}, {"ip": "192.168.1.240"}]}}}
    assert cells("Service", lb) == ["lb", "LoadBalancer", "10.96.0.20", "192.168.1.240,192.168.1.241",
                                    "80:31000/TCP", "5m", "a=1,b=2"]
    pending = {"metadata": meta("lb2"), "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.21"}}
    assert cells("Service", pending)[1:5] == ["LoadBalancer", "10.96.0.21", "<pending>", "<none>"]
    ext = {"metadata": meta("db"), "spec": {"type": "ExternalName", "externalName": "db.example.com"}}
    assert cells("Service", ext)[2:4] == ["<none>", "db.example.com"]
    plain = {"metadata": meta("svc"), "spec": {"clusterIP": "None", "ports": [{"port": 53, "protocol": "UDP"}]}}
    assert cells("Service", plain)[1:5] == ["ClusterIP", "None", "<none>", "53/UDP"]


def test_endpoints_and_slices():
    ep = {"metadata": meta("web"), "subsets": [{"addresses": [{"ip": f"10.0.0.{i}"} for i in range(4)],
                                                "ports": [{"port": 80}]}]}
    assert cells("Endpoints", ep)[1] == "10.0.0.0:80,10.0.0.1:80,10.0.0.2:80 + 1 more..."
    assert cells("Endpoints", {"metadata": meta("none")})[1] == "<none>"
    s = {"metadata": meta("web-x"), "addressType": "IPv4", "ports": [{"port": 80}, {"name": "dns"}],
         "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"], "conditions": {"ready": False}}]}
    assert cells("EndpointSlice", s, "discovery.k8s.io")[1:4] == ["IPv4", "80,dns", "10.0.0.1,10.0.0.2"]
    empty = {"metadata": meta("e"), "addressType": "IPv4"}
    assert cells("EndpointSlice", empty, "discovery.k8s.io")[2:4] == ["<unset>", "<unset>"]


def test_small_kinds():
    assert cells("Namespace", {"metadata": meta("ns"), "status": {"phase": "Terminating"}})[1] == "Terminating"
    assert cells("ConfigMap", {"metadata": meta(), "data": {"a": "1"}, "binaryData": {"b": "AA=="}})[1] == 2
    assert cells("Secret", {"metadata": meta(), "data": {"a": "MQ=="}})[1:3] == ["Opaque", 1]
    assert cells("ServiceAccount", {"metadata": meta(), "secrets": [{"name": "t"}]})[1] == 1
    cs = {"metadata": {"name": "etcd-0"}, "conditions": [{"type": "Healthy", "status": "True", "message": "ok"}]}
    assert cells("ComponentStatus", cs) == ["etcd-0", "Healthy", "ok", ""]
    sc = {"metadata": meta("standard", annotations={"storageclass.kubernetes.io/is-default-class": "true"}),
          "provisioner": "rancher.io/local-path"}
    assert cells("StorageClass", sc, "storage.k8s.io")[:5] == ["standard (default)", "rancher.io/local-path",
                                                              "Delete", "Immediate", False]


def test_job_and_cronjob():
    job = {"metadata": meta("pi"), "spec": {"completions": 1, "template": {"spec": {"containers": []}}},
           "status": {"succeeded": 1, "startTime": ago(200), "completionTime": ago(170),
                      "conditions": [{"type": "Complete", "status": "True"}]}}
    assert cells("Job", job, "batch")[:5] == ["pi", "Complete", "1/1", "30s", "5m"]
    cj = {"metadata": meta("hello"), "spec": {"schedule": "*/1 * * * *", "jobTemplate": {"spec": {}}}}
    assert cells("CronJob", cj, "batch")[:7] == ["hello", "*/1 * * * *", "<none>", "False", 0, "<none>", "5m"]


def test_hpa_row():
    hpa = {"metadata": meta("web"), "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                                             "minReplicas": 1, "maxReplicas": 10, "metrics": [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]},
           "status": {"currentReplicas": 2, "currentMetrics": [
               {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 23}}}]}}
    assert cells("HorizontalPodAutoscaler", hpa, "autoscaling") == ["web", "Deployment/web", "cpu: 23%/50%", "1",
                                                                   10, 2, "5m"]
    fresh = {"metadata": meta("w"), "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "w"}, "maxReplicas": 3}}
    assert cells("HorizontalPodAutoscaler", fresh, "autoscaling")[2:4] == ["cpu: <unknown>/80%", "1"]


def test_ingress_rows():
    ing = {"metadata": meta("web"), "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example"]}],
                                             "rules": [{"host": "a.example"}, {"host": "b.example"}]},
           "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.240"}]}}}
    assert cells("Ingress", ing, "networking.k8s.io") == ["web", "nginx", "a.example,b.example", "192.168.1.240",
                                                          "80, 443", "5m"]
    bare = {"metadata": meta("any"), "spec": {"rules": [{}]}}
    assert cells("Ingress", bare, "networking.k8s.io")[1:5] == ["<none>", "*", "", "80"]
    ic = {"metadata": meta("nginx"), "spec": {"controller": "k8s.io/ingress-nginx"}}
    assert cells("IngressClass", ic, "networking.k8s.io")[1:3] == ["k8s.io/ingress-nginx", "<none>"]


def test_pvc_and_rbac_and_pdb():
    pvc = {"metadata": meta("data"), "spec": {"volumeName": "pv-1", "storageClassName": "standard"},
           "status": {"phase": "Bound", "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                      "capacity": {"storage": "1Gi"}}}
    assert cells("PersistentVolumeClaim", pvc) == ["data", "Bound", "pv-1", "1Gi", "RWO,RWX", "standard", "<unset>",
                                                   "5m", "Filesystem"]
    rb = {"metadata": meta("rb"), "roleRef": {"kind": "ClusterRole", "name": "view"},
          "subjects": [{"kind": "User", "name": "jane"}, {"kind": "ServiceAccount", "namespace": "d", "name": "sa"}]}
    assert cells("RoleBinding", rb, "rbac.authorization.k8s.io") == ["rb", "ClusterRole/view", "5m", "jane", "", "d/sa"]
    pdb = {"metadata": meta("pdb"), "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}}
    assert cells("PodDisruptionBudget", pdb, "policy")[1:4] == ["50%", "N/A", 1]


def test_event_rows():
    ev = {"metadata": meta("web.1", age=600), "involvedObject": {"kind": "Pod", "name": "web", "fieldPath":
                                                                 "spec.containers{c}"},
          "type": "Normal", "reason": "Pulled", "message": " pulled \n", "source": {"component": "kubelet",
                                                                                   "host": "w1"},
          "firstTimestamp": ago(600), "lastTimestamp": ago(60), "count": 3}
    assert cells("Event", ev) == ["60s", "Normal", "Pulled", "pod/web", "spec.containers{c}",
                                  "kubelet, w1", "pulled", "10m", 3, "web.1"]
    new = {"metadata": meta("e2"), "involvedObject": {"kind": "Node"}, "type": "Warning", "reason": "X",
           "eventTime": "2026-01-10T11:59:00.000000Z", "reportingComponent": "ctrl"}
    c = cells("Event", new)
    assert (c[0], c[3], c[5], c[7], c[8]) == ("60s", "node", "ctrl", "60s", 1)


def test_events_k8s_io_event_uses_its_own_field_names():
    ev = {"metadata": meta("e"), "regarding": {"kind": "Pod", "name": "p"}, "note": "hi", "type": "Normal",
          "reason": "R", "eventTime": "2026-01-10T11:58:00.000000Z", "reportingController": "sched",
          "series": {"count": 4, "lastObservedTime": "2026-01-10T11:59:30.000000Z"}}
    c = cells("Event", ev, "events.k8s.io")
    assert (c[0], c[3], c[5], c[6], c[7], c[8]) == ("30s", "pod/p", "sched", "hi", "2m", 4)


# ------------------------------------------------------------------------------- default and CRD tables
def test_unknown_kind_gets_the_default_table():
    t = T.table("Widget", "example.com", [{"metadata": meta("w", age=3600)}], NOW)
    assert [(c["name"], c["type"], c["format"]) for c in t["columnDefinitions"]] == \
        [("Name", "string", "name"), ("Created At", "date", "")]
    assert t["rows"][0]["cells"] == ["w", "2026-01-10T11:00:00Z"]


def test_crd_kinds_print_their_columns_or_age():
    res = registry.register_crd({"metadata": {"name": "gadgets.example.com"}, "spec": {
        "group": "example.com", "scope": "Namespaced", "names": {"kind": "Gadget", "plural": "gadgets"},
        "versions": [{"name": "v1", "served": True, "storage": True}]}})
    try:
        assert res is not None
        t = T.table("Gadget", "example.com", [{"metadata": meta("g")}], NOW)
        assert columns(t) == [("Name", 0), ("Age", 0)] and t["rows"][0]["cells"] == ["g", "5m"]
    finally:
        registry.unregister_crd("gadgets.example.com")
    cols = [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
            {"name": "Tags", "type": "string", "jsonPath": ".spec.tags"},
            {"name": "Ok", "type": "boolean", "jsonPath": ".status.ok", "priority": 1},
            {"name": "Seen", "type": "date", "jsonPath": ".status.seen"}]
    obj = {"metadata": meta("g"), "spec": {"size": 3.0, "tags": ["a", "<b>"]}, "status": {"seen": ago(90)}}
    t = T.table("Gadget", "example.com", [obj], NOW, extra={"printerColumns": cols})
    assert columns(t) == [("Name", 0), ("Size", 0), ("Tags", 0), ("Ok", 1), ("Seen", 0)]
    # missing values are null (kubectl leaves the cell blank), lists are Go-JSON, dates are ages
    assert t["rows"][0]["cells"] == ["g", 3, '["a","\\u003cb\\u003e"]', None, "90s"]


def test_metallb_rows_follow_the_crds():
    pool = {"metadata": meta("first-pool"), "spec": {"addresses": ["192.168.1.240-192.168.1.250"]}}
    # autoAssign/avoidBuggyIPs are schema defaults, so a real API server has written them
    assert cells("IPAddressPool", pool, "metallb.io") == ["first-pool", True, False, '["192.168.1.240-192.168.1.250"]']
    adv = {"metadata": meta("l2"), "spec": {"ipAddressPools": ["first-pool"]}}
    assert cells("L2Advertisement", adv, "metallb.io") == ["l2", '["first-pool"]', None, None, None]


# ------------------------------------------------------------------------------- the Table itself
def test_include_object_variants():
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cm", labels={"a": "b"}), "data": {"k": "v"}}
    row = T.table("ConfigMap", "", [obj], NOW)["rows"][0]
    assert row["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj["metadata"]}
    assert T.table("ConfigMap", "", [obj], NOW, "Object")["rows"][0]["object"] == obj
    assert "object" not in T.table("ConfigMap", "", [obj], NOW, "None")["rows"][0]
    bare = {"metadata": meta("cm")}  # a stored object without kind gets it, as the served object has
    full = T.table("ConfigMap", "", [bare], NOW, "Object")["rows"][0]["object"]
    assert (full["kind"], full["apiVersion"]) == ("ConfigMap", "v1")
    with pytest.raises(ValueError, match="unrecognized includeObject"):
        T.table("ConfigMap", "", [obj], NOW, "Everything")


def test_table_envelope_and_watch_event():
    t = T.table("Pod", "", [], NOW, extra={"resourceVersion": "42", "continue": "tok"})
    assert (t["kind"], t["apiVersion"], t["metadata"]) == ("Table", "meta.k8s.io/v1",
                                                           {"resourceVersion": "42", "continue": "tok"})
    assert t["rows"] == []
    ev = T.table_row_event("Pod", "", pod(RUNNING, resourceVersion="77"), NOW, "Metadata")
    assert ev["metadata"]["resourceVersion"] == "77" and len(ev["rows"]) == 1
    assert [c["name"] for c in ev["columnDefinitions"]][:2] == ["Name", "Ready"]
    assert T.table("Pod", "", [], NOW, extra={"noHeaders": True})["columnDefinitions"] == []
