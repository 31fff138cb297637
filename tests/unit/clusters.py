"""A cluster of the seeds' shape for the controllers' unit tests: a control plane `m-k8s` and workers
`w1-k8s`.. on 192.168.1.0/24, every node Ready, on a clock the test moves by hand."""
from __future__ import annotations

from typing import Optional

from netemu.control import nodes
from netemu.control.cluster import Cluster
from netemu.spec.models import Lab, LabNode


class Clock:
    def __init__(self, t: float = 1_700_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def ready_cluster(workers: int = 3, seed: Optional[int] = 1, node_kw: Optional[dict] = None,
                  **lab_spec) -> tuple[Cluster, Clock]:
    """seed None: the Lab's default; node_kw: fields of every worker (capacity, labels...)."""
    lab = Lab()
    lab.metadata.name = "unit"
    if seed is not None:
        lab.spec.seed = seed
    for k, v in lab_spec.items():
        setattr(lab.spec, k, v)
    lab.spec.nodes = [LabNode(name="m-k8s", ip="192.168.1.10", role="control-plane")] + [
        LabNode(name=f"w{i}-k8s", ip=f"192.168.1.{100 + i}", **(node_kw or {})) for i in range(1, workers + 1)]
    clock = Clock()
    c = Cluster(lab, clock=clock)
    c.bootstrap()
    for n in c.store.list("Node"):
        nodes.set_ready(c, n, True, "KubeletReady", "ok")
    return c, clock
