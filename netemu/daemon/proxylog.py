"""kube-proxy's pod log is the proxier's sync log: each line the lab's kube-proxy logs about a node
also goes, klog-style, to the log of that node's kube-proxy pod, so `kubectl logs -n kube-system
kube-proxy-xxxxx` shows what it would on a real node."""
from __future__ import annotations

import logging
import os
import re
import time

from netemu import paths

_NODE = re.compile(r"^kube-proxy \((\w+)\) (\S+): (.*)$")


class ProxyPodLog(logging.Handler):
    def __init__(self, daemon):
        super().__init__(logging.INFO)
        self.d = daemon

    def emit(self, record: logging.LogRecord) -> None:
        try:
            m = _NODE.match(record.getMessage())
            if not m:
                return
            node, text = m.group(2), m.group(3)
            pod = next((p for p in self.d.cluster.store.list("Pod", "kube-system")
                        if (p.metadata.labels or {}).get("k8s-app") == "kube-proxy" and p.spec.node_name == node), None)
            if pod is None:
                return
            t = time.time()
            stamp = time.strftime("%m%d %H:%M:%S", time.gmtime(t)) + f".{int(t * 1e6) % 1_000_000:06d}"
            level = record.levelname[0]
            path = paths.container_log(self.d.name, "kube-system", pod.metadata.name, "kube-proxy")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a") as f:
                f.write(f"{level}{stamp}       1 proxier.go] \"{text}\"\n")
        except Exception:  # a log line must never break the proxier
            pass


def install(daemon) -> None:
    logging.getLogger("netemu.kubeproxy").addHandler(ProxyPodLog(daemon))
