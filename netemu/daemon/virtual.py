"""Objects the API serves from the control process's live parts rather than the store:
metrics.k8s.io (PodMetrics, NodeMetrics from the pods' cgroups, as metrics-server serves them) and
componentstatuses (the control process's parts, which are up whenever it answers)."""
from __future__ import annotations

from typing import Optional

from netemu.control.store import rfc3339


def _cpu(milli) -> str:
    return f"{int(milli or 0) * 1_000_000}n"


def _mem(b) -> str:
    return f"{int(b or 0) // 1024}Ki"


def install(daemon) -> None:
    st = daemon.storage

    def pod_metrics(namespace: Optional[str]) -> list[dict]:
        from netemu.dataplane.metrics import top_pods

        out = []
        for m in top_pods(daemon.metrics, daemon.cluster.store, namespace):
            pod = daemon.cluster.store.find("Pod", m["namespace"], m["name"])
            containers = [c.name for c in pod.spec.containers] if pod else ["main"]
            # the cgroup is the pod's: its usage goes to the first container, zero to the others
            usage = [{"name": c, "usage": {"cpu": _cpu(m["cpu_milli"] if i == 0 else 0),
                                           "memory": _mem(m["memory_bytes"] if i == 0 else 0)}}
                     for i, c in enumerate(containers)]
            out.append({"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                        "metadata": {"name": m["name"], "namespace": m["namespace"],
                                     "creationTimestamp": rfc3339(m["timestamp"]),
                                     "labels": (pod.metadata.labels if pod else None) or {}},
                        "timestamp": rfc3339(m["timestamp"]), "window": f"{int(m['window'])}s",
                        "containers": usage})
        return out

    def node_metrics(namespace: Optional[str]) -> list[dict]:
        from netemu.dataplane.metrics import top_nodes

        out = []
        for m in top_nodes(daemon.metrics, daemon.cluster.store):
            if m["cpu_milli"] is None:
                continue  # metrics-server leaves out nodes it has no metrics for
            ts = rfc3339(daemon.metrics.last_sample or daemon.started)
            out.append({"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                        "metadata": {"name": m["name"], "creationTimestamp": ts},
                        "timestamp": ts, "window": f"{int(daemon.metrics.resolution)}s",
                        "usage": {"cpu": _cpu(m["cpu_milli"]), "memory": _mem(m["memory_bytes"])}})
        return out

    def component_statuses(namespace: Optional[str]) -> list[dict]:
        return [{"kind": "ComponentStatus", "apiVersion": "v1",
                 "metadata": {"name": n, "creationTimestamp": None},
                 "conditions": [{"type": "Healthy", "status": "True", "message": msg}]}
                for n, msg in (("controller-manager", "ok"), ("scheduler", "ok"),
                               ("etcd-0", '{"health":"true","reason":""}'))]

    st.providers.update(PodMetrics=pod_metrics, NodeMetrics=node_metrics, ComponentStatus=component_statuses)
