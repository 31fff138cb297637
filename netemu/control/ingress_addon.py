"""The NGINX Ingress controller as an addon of the lab, and the Ingress status it reports.

What ingress-nginx's deploy manifest puts in a cluster, the parts netemu models: namespace
`ingress-nginx`, the controller Deployment `ingress-nginx-controller` (labels
app.kubernetes.io/name: ingress-nginx, app.kubernetes.io/component: controller; the image's
stand-in runs real nginx, see netemu.workloads.ingress_nginx), its ConfigMap and the IngressClass
`nginx`, marked as the default class (see CONFIG for the ConfigMap's settings). No Service: as in
seed 000 (and the bare-metal guides it follows), the user exposes the controller with a NodePort
Service of their own, e.g. topologies/seeds/ingress-nginx-controller.yaml (30100 -> 80, 30101 -> 443).

When: the Lab's `spec.ingress` says so (true/false); unset, the controller appears as soon as the
lab has an Ingress, or a Service that selects app.kubernetes.io/name=ingress-nginx (the seed's
NodePort Service), whether at `up` or later with `apply`, unless the lab already runs a
controller of its own (a Deployment or Pod with an ingress-nginx controller image).

:func:`reconcile` is a level-triggered controller of the cluster (pure): it adds the addon when
wanted, and writes each served Ingress's status.loadBalancer as ingress-nginx does without
--publish-service: the addresses of the nodes running a ready controller pod.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from netemu import paths
from netemu.control.pods import is_ready, is_terminating
from netemu.images import parse_image
from netemu.ingress.model import handles
from netemu.ingress.settings import (
    CONTROLLER_CLASS, CONTROLLER_NAMESPACE, DEFAULT_CLASS_ANNOTATION, INGRESS_CLASS, ControllerConfig,
)
from netemu.spec.defaults import apply_defaults
from netemu.spec.ingress import IngressClass, IngressLoadBalancerIngress
from netemu.spec.models import ConfigMap, Deployment, K8sModel, Lab, Namespace
from netemu.wellknown import OS_LABEL

if TYPE_CHECKING:
    from netemu.control.cluster import Cluster

NAMESPACE = CONTROLLER_NAMESPACE
NAME = "ingress-nginx-controller"
IMAGE = "registry.k8s.io/ingress-nginx/controller:v1.11.3"
# repository paths of controller images (any registry or tag): the stand-in plays them all
CONTROLLER_IMAGES = frozenset({
    "ingress-nginx/controller",  # registry.k8s.io, k8s.gcr.io
    "ingress-nginx/controller-chroot",
    "kubernetes-ingress-controller/nginx-ingress-controller",  # quay.io, before 0.33
})
SELECTOR_LABEL = "app.kubernetes.io/name"
# The controller's ConfigMap, as an admin tunes it for scaling without errors. A pod that goes away
# answers its last connections with a reset (nginx retries at once), then, once its network is
# removed, not at all, for the ~0.1 s until nginx has reloaded without it: with ingress-nginx's
# defaults (5 s connect timeout, 3 tries) a request may then wait 15 s or fail (the 502/504 of
# rolling updates). Here a silent endpoint costs 1 s, and a request tries every endpoint before failing.
CONFIG = {
    "proxy-connect-timeout": "1",
    "proxy-next-upstream-tries": "0",
}
LABELS = {
    "app.kubernetes.io/name": "ingress-nginx",
    "app.kubernetes.io/instance": "ingress-nginx",
    "app.kubernetes.io/component": "controller",
}
PART_OF = {"app.kubernetes.io/part-of": "ingress-nginx", "app.kubernetes.io/version": IMAGE.rsplit(":v", 1)[-1]}


def ingress_addon(lab: Lab, api_socket: Optional[str] = None) -> list[K8sModel]:
    """The namespace, ConfigMap, IngressClass and controller Deployment."""
    sock = api_socket or paths.api_socket(lab.metadata.name)
    common = {**LABELS, **PART_OF}
    ns = Namespace.model_validate({"metadata": {"name": NAMESPACE, "labels": {
        "app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/instance": "ingress-nginx"}}})
    cm = ConfigMap.model_validate({"metadata": {"name": NAME, "namespace": NAMESPACE, "labels": common},
                                   "data": dict(CONFIG)})
    ic = IngressClass.model_validate({
        "metadata": {"name": INGRESS_CLASS, "labels": common,
                     "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "spec": {"controller": CONTROLLER_CLASS},
    })
    probe = {"httpGet": {"path": "/healthz", "port": 10254, "scheme": "HTTP"}, "periodSeconds": 10,
             "timeoutSeconds": 1, "successThreshold": 1}
    dep = Deployment.model_validate({
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": common},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 10,
            "minReadySeconds": 0,
            "selector": {"matchLabels": dict(LABELS)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": common},
                "spec": {
                    "dnsPolicy": "ClusterFirst",
                    "nodeSelector": {OS_LABEL: "linux"},
                    "serviceAccountName": "ingress-nginx",
                    "terminationGracePeriodSeconds": 300,
                    "containers": [{
                        "name": "controller",
                        "image": IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["/nginx-ingress-controller",
                                 "--election-id=ingress-nginx-leader",
                                 f"--controller-class={CONTROLLER_CLASS}",
                                 f"--ingress-class={INGRESS_CLASS}",
                                 f"--configmap=$(POD_NAMESPACE)/{NAME}",
                                 "--watch-ingress-without-class=true"],
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "POD_NAMESPACE",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                {"name": "NETEMU_API_SOCKET", "value": sock}],
                        "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"},
                                  {"name": "https", "containerPort": 443, "protocol": "TCP"}],
                        # the manifest waits 10s before the first probes; the stand-in is ready when
                        # nginx answers, so readiness starts at once (`up` returns sooner)
                        "readinessProbe": {**probe, "failureThreshold": 3},
                        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 5},
                        "resources": {"requests": {"cpu": "100m", "memory": "90Mi"}},
                    }],
                },
            },
        },
    })
    objs: list[K8sModel] = [ns, cm, ic, dep]
    for o in objs:
        apply_defaults(o)
    return objs


# --------------------------------------------------------------------------- when
def is_controller_image(image: Optional[str]) -> bool:
    return parse_image(image).repository in CONTROLLER_IMAGES


def _runs_image(containers) -> Optional[bool]:
    return True if any(is_controller_image(ct.image) for ct in containers) else None


def controller_pods(store) -> list:
    """Pods running an ingress controller's image (an index: the lab's other pods are not looked at)."""
    return store.indexed("pod-ingress-controller", "Pod", lambda p: _runs_image(p.spec.containers), True)


def _runs_controller(c: "Cluster") -> bool:
    return bool(c.store.indexed("deployment-ingress-controller", "Deployment",
                                lambda d: _runs_image(d.spec.template.spec.containers), True)
                or controller_pods(c.store))


def wanted(c: "Cluster") -> bool:
    setting = getattr(c.lab.spec, "ingress", None)
    if setting is not None:
        return bool(setting)
    if c.store.list("Ingress"):
        return True
    return bool(c.store.indexed("service-selects-ingress", "Service",
                                lambda s: (s.spec.selector or {}).get(SELECTOR_LABEL), "ingress-nginx"))


# --------------------------------------------------------------------------- the controller
READS = ("Ingress", "IngressClass", "Service", "Deployment", "Pod", "Node")  # a pass skips it when none changed


def reconcile(c: "Cluster") -> None:
    """Add the addon when wanted; keep the served Ingresses' status addresses current."""
    if wanted(c) and not _runs_controller(c):
        missing = [o for o in ingress_addon(c.lab) if c.store.find(o.kind, o.metadata.namespace or "",
                                                                   o.metadata.name) is None]
        if any(o.kind == "IngressClass" for o in missing) and any(
                (ic.spec.controller == CONTROLLER_CLASS) for ic in c.store.list("IngressClass")):
            missing = [o for o in missing if o.kind != "IngressClass"]  # the user's class for the controller
        if missing:
            c.apply(missing)
    _update_status(c)


def controller_addresses(c: "Cluster") -> list[str]:
    """InternalIPs of the nodes running a ready controller pod (sorted)."""
    from netemu.control.nodes import internal_ip

    ips = set()
    for p in controller_pods(c.store):
        if is_terminating(p) or not is_ready(p) or not p.spec.node_name:
            continue
        if not any(is_controller_image(ct.image) for ct in p.spec.containers):
            continue
        node = c.store.find("Node", "", p.spec.node_name)
        if node is not None and (ip := internal_ip(node)):
            ips.add(ip)
    return sorted(ips, key=lambda ip: tuple(int(x) for x in ip.split(".")) if ip.count(".") == 3 else (0,))


def _update_status(c: "Cluster") -> None:
    ingresses = c.store.list("Ingress")
    if not ingresses:
        return
    addresses = controller_addresses(c)
    if not addresses:
        return  # as ingress-nginx: a controller restarting does not clear the status
    classes = [ic.dump() for ic in c.store.list("IngressClass")]
    cfg = ControllerConfig(watch_without_class=True)
    want = [IngressLoadBalancerIngress(ip=ip) for ip in addresses]
    for ing in ingresses:
        if not handles(ing.dump(), classes, cfg):
            continue
        current = ing.status.load_balancer.ingress or []
        if [i.dump() for i in current] != [i.dump() for i in want]:
            ing.status.load_balancer.ingress = [IngressLoadBalancerIngress(ip=ip) for ip in addresses]
            c.store.update(ing)
            c.event(ing, "Sync", "Scheduled for sync", source="nginx-ingress-controller")
