"""Privileged end-to-end fixtures: real labs with unique names and addresses, always torn down.

Every lab a test makes gets a name no other test uses and its own /24, pod and service ranges,
so labs can run side by side. After the whole run `ip netns list` must be what it was before.
"""
from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from netemu.dataplane import names

pytestmark = pytest.mark.e2e

_counter = itertools.count(1)
# the labs this run made: only their namespaces count as leaked (people and other runs have labs up too)
RUN_LABS: set[str] = set()


def pytest_configure(config):
    """A run that is terminated (SIGTERM from `timeout`, CI or a person) must still tear its labs down:
    pytest runs fixture finalizers on KeyboardInterrupt, not when a signal kills it outright (a lab of
    a terminated run once outlived it, supervisor and all)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}: tearing the test labs down")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="end-to-end tests build real namespaces: run as root")
        for item in items:
            if "e2e" in str(item.fspath):
                item.add_marker(skip)


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="session", autouse=True)
def own_kubeconfig(tmp_path_factory):
    """`netemu up` merges each lab's context into $KUBECONFIG: the tests' labs go to a file of the run's
    own, never into the user's ~/.kube/config."""
    path = tmp_path_factory.mktemp("kube") / "config"
    old = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(path)
    yield path
    if old is None:
        os.environ.pop("KUBECONFIG", None)
    else:
        os.environ["KUBECONFIG"] = old


def run_leaks(before: set[str], after: set[str], labs: set[str]) -> list[str]:
    """Namespaces that appeared during the run and belong to one of the run's own labs."""
    return sorted(n for n in after - before if any(names.belongs_to(lab, n) for lab in labs))


@pytest.fixture(scope="session", autouse=True)
def netns_unchanged():
    """A test run must leave `ip netns list` as it found it, as far as its own labs go: namespaces of
    labs it did not start (a person's lab, another run's) come and go as they please."""
    before = _netns()
    yield
    leaked = run_leaks(before, _netns(), RUN_LABS)
    assert not leaked, f"namespaces leaked by the tests: {leaked}"


def netemu(*args: str, check: bool = True, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "netemu", *args], capture_output=True, text=True,
                         timeout=timeout, input=input)
    if check and res.returncode != 0:
        raise AssertionError(f"netemu {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


class TestLab:
    """A lab under test: its name, addresses, and helpers that talk to it."""

    def __init__(self, name: str, index: int):
        self.name = name
        RUN_LABS.add(name)
        self.index = index
        self.network = f"192.168.{200 + index % 50}.0/24"
        net = ipaddress.ip_network(self.network)
        self.gateway = str(net.network_address + 1)
        self.node_ips = {"m-k8s": str(net.network_address + 10),
                         "w1-k8s": str(net.network_address + 101),
                         "w2-k8s": str(net.network_address + 102),
                         "w3-k8s": str(net.network_address + 103)}
        self.pod_cidr = f"172.{20 + index % 10}.0.0/16"
        self.service_cidr = f"10.{100 + index % 50}.0.0/16"
        self.dns_ip = f"10.{100 + index % 50}.0.10"
        self.up_result: subprocess.CompletedProcess | None = None
        self.default_spec: dict = {}  # Lab spec fields every `up` of this lab gets (e.g. proxyMode)
        self.node_fields: dict[str, str] = {}  # more flow-style fields of a node (e.g. "capacity: {pods: 8}")

    def lab_doc(self, **spec) -> str:
        nodes = "\n".join(
            f"  - {{name: {n}, ip: {ip}{', role: control-plane' if n == 'm-k8s' else ''}"
            f"{', ' + self.node_fields[n] if n in self.node_fields else ''}}}"
            for n, ip in self.node_ips.items())
        extra = "".join(f"  {k}: {v}\n" for k, v in spec.items())
        return (f"apiVersion: netemu.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: {self.name}\nspec:\n"
                f"  network: {self.network}\n  gateway: {self.gateway}\n  podCIDR: {self.pod_cidr}\n"
                f"  serviceCIDR: {self.service_cidr}\n  clusterDNS: {self.dns_ip}\n"
                f"  podEvictionTimeoutSeconds: 2\n  restartBackoffSeconds: 1\n"
                f"  nodes:\n{nodes}\n{extra}")

    def dual_stack(self) -> dict:
        """Make the lab dual-stack with IPv6 ranges as unique as its IPv4 ones (they follow its index);
        returns the Lab spec fields to give `up` (lab_spec= or default_spec)."""
        i = self.index
        self.network6 = f"fd00:192:168:{200 + i % 50}::/64"
        self.gateway6 = f"fd00:192:168:{200 + i % 50}::1"
        self.pod_cidr6 = f"fd00:172:{20 + i % 10}::/56"
        self.service_cidr6 = f"fd00:10:{100 + i % 50}::/112"
        self.node_ips6 = {n: f"fd00:192:168:{200 + i % 50}::{ip.rsplit('.', 1)[1]}" for n, ip in self.node_ips.items()}
        for n, ip6 in self.node_ips6.items():
            self.node_fields[n] = f'ip6: "{ip6}"'
        return {"network6": f'"{self.network6}"', "podCIDR6": f'"{self.pod_cidr6}"',
                "serviceCIDR6": f'"{self.service_cidr6}"'}

    def up(self, manifests: str = "", *, tmp_path, check: bool = True, lab_spec: dict | None = None,
           extra_args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        path = tmp_path / f"{self.name}.yaml"
        path.write_text(self.lab_doc(**{**self.default_spec, **(lab_spec or {})})
                        + ("---\n" + manifests if manifests else ""))
        self.up_result = netemu("up", str(path), *extra_args, check=check, timeout=180)
        return self.up_result

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return netemu(*args, "--lab", self.name, check=check, timeout=timeout)

    def get(self, kind: str, *args: str) -> list[dict]:
        out = self.run("get", kind, *args, "-o", "json").stdout
        doc = json.loads(out)
        return doc["items"] if doc.get("kind") == "List" else [doc]

    def pods(self, selector: str | None = None, running_only: bool = True) -> list[dict]:
        items = self.get("pods", *(["-l", selector] if selector else []))
        if running_only:
            items = [p for p in items if not p["metadata"].get("deletionTimestamp")]
        return items

    def exec(self, pod: str, *cmd: str, check: bool = True, timeout: float = 30,
             namespace: str = "default") -> subprocess.CompletedProcess:
        return netemu("exec", pod, "--lab", self.name, "-n", namespace, "--", *cmd, check=check, timeout=timeout)

    def node_netns(self, node: str) -> str:
        return names.node_netns(self.name, node)

    def pod_netns(self, pod: str, namespace: str = "default") -> str:
        return names.pod_netns(self.name, namespace, pod)

    def netns(self) -> list[str]:
        """This lab's namespaces now."""
        return sorted(n for n in _netns() if names.belongs_to(self.name, n))

    def node_exec(self, node: str, *cmd: str, check: bool = True, timeout: float = 30):
        return subprocess.run(["ip", "netns", "exec", self.node_netns(node), *cmd], capture_output=True,
                              text=True, check=check, timeout=timeout)

    def wait_for(self, predicate, timeout: float = 30, interval: float = 0.2, what: str = "condition"):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")

    def down(self) -> None:
        netemu("down", self.name, check=False)

    def host_safe(self, address: str) -> None:
        """Before the host sends anything to a lab address: the route must go into this lab."""
        dev = subprocess.run(["ip", "-j", "route", "get", address], capture_output=True, text=True).stdout
        routes = json.loads(dev or "[]")
        assert routes and routes[0].get("dev", "").startswith("ne-"), \
            f"refusing to send to {address}: it would leave through {routes}"


def _in_use() -> set[str]:
    """Networks a running lab (a test's or anybody's) or the host already uses."""
    used = set()
    from netemu import locks, paths

    for name in paths.running_labs():  # a lab starting has its claim, one up its state file too
        spec = (locks.read_claim(name) or {}).get("spec") or {}
        used |= {spec.get("network"), spec.get("podCIDR"), spec.get("serviceCIDR")}
    out = subprocess.run(["ip", "-j", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    for r in json.loads(out or "[]"):
        used.add(r.get("dst"))
    return {u for u in used if u}


def _free_index() -> int:
    """An index whose /24, pod and service ranges nothing else uses now (labs run side by side)."""
    used = _in_use()
    nets = [ipaddress.ip_network(u, strict=False) for u in used if "/" in u or u.count(".") == 3]
    for _ in range(200):
        i = next(_counter) + os.getpid() % 7
        mine = [ipaddress.ip_network(f"192.168.{200 + i % 50}.0/24"), ipaddress.ip_network(f"172.{20 + i % 10}.0.0/16"),
                ipaddress.ip_network(f"10.{100 + i % 50}.0.0/16")]
        if not any(m.overlaps(n) for m in mine for n in nets if n.version == 4 and n.prefixlen > 0):
            return i
    raise RuntimeError("no free address ranges for a test lab (192.168.200-249.0/24, 172.20-29/16, 10.100-149/16)")


@pytest.fixture
def make_lab():
    """Factory: make_lab() -> TestLab with a unique name; every lab made is torn down."""
    labs: list[TestLab] = []

    def factory() -> TestLab:
        lab = TestLab(f"t{uuid.uuid4().hex[:6]}", _free_index())
        labs.append(lab)
        return lab

    yield factory
    for lab in labs:
        lab.down()
    for lab in labs:
        left = lab.netns()
        assert not left, f"lab {lab.name} left namespaces behind: {left}"


@pytest.fixture
def lab(make_lab):
    return make_lab()


@pytest.fixture(scope="session")
def kit():
    """The throwaway VM's kit (netemu/vmtest), built once; the VM tests are skipped only when QEMU
    cannot run here at all."""
    from netemu.vmtest.kit import ensure_kit, install_host_packages, qemu_problem

    install_problem = install_host_packages()
    problem = qemu_problem()
    if problem:
        pytest.skip(f"QEMU cannot run on this machine: {problem}"
                    + (f"; installing failed: {install_problem}" if install_problem else ""))
    assert install_problem is None, f"the VM kit needs: {install_problem}"
    t0 = time.monotonic()
    k = ensure_kit()
    print(f"\nVM kit {k.path} (kernel {k.kernel}) ready in {time.monotonic() - t0:.1f} s")
    return k


# the seeds' NodePort walkthrough (seed 000): the echo-hname deployment and its NodePort Service
NP_PODS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: np-pods
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: np-pods
  template:
    metadata:
      labels:
        app: np-pods
    spec:
      containers:
      - name: echo-hname
        image: sysnet4admin/echo-hname
        ports:
        - containerPort: 80
"""
NP_SVC = """\
---
apiVersion: v1
kind: Service
metadata:
  name: np-svc
spec:
  selector:
    app: np-pods
  ports:
  - name: http
    protocol: TCP
    port: 80
    targetPort: 80
    nodePort: 30000
  type: NodePort
"""


def curl(lab: TestLab, address: str, port: int, path: str = "/", timeout: float = 3) -> str:
    """curl from the host, only after checking the route goes into the lab."""
    lab.host_safe(address)
    res = subprocess.run(["curl", "-s", "-m", str(timeout), f"http://{address}:{port}{path}"],
                         capture_output=True, text=True)
    return res.stdout if res.returncode == 0 else f"<curl rc={res.returncode}>"


# --------------------------------------------------------------------------- the real kubectl
KUBECTL = shutil.which("kubectl")


@contextlib.contextmanager
def kube_lab(tmp_path_factory, prefix: str, manifests: str, shape=None):
    """A module's lab with a kubeconfig file of its own (lab.kubeconfig, lab.tmp), always taken down;
    shape(lab) may change its nodes before it is brought up."""
    lab = TestLab(f"{prefix}{uuid.uuid4().hex[:6]}", _free_index())
    if shape is not None:
        shape(lab)
    tmp = tmp_path_factory.mktemp("kube")
    try:
        lab.up(manifests, tmp_path=tmp)
        kubeconfig = tmp / "kubeconfig"
        kubeconfig.write_text(netemu("kubeconfig", "--lab", lab.name).stdout)
        lab.kubeconfig, lab.tmp = str(kubeconfig), tmp
        yield lab
    finally:
        lab.down()
        assert not [n for n in _netns() if n.startswith(f"ne-{lab.name}")]


def kubectl(lab, *args: str, check: bool = True, timeout: float = 60, input=None, env: dict | None = None,
            text: bool = True) -> subprocess.CompletedProcess:
    e = dict(os.environ, KUBECONFIG=lab.kubeconfig, **(env or {}))
    res = subprocess.run([KUBECTL, *args], capture_output=True, text=text, timeout=timeout, input=input, env=e)
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def jsonpath(lab, *args: str) -> str:
    return kubectl(lab, *args).stdout.strip()
