"""Memory of stand-ins forked from a preloaded parent, as the pod launcher forks them.

A parent process imports netemu.workloads and freezes its objects (as the launcher does),
then forks 20 echo-hname stand-ins on distinct loopback ports. After each has served a few
requests, the mean proportional set size (Pss, shared pages split among their sharers) must
stay under 5 MB: a sanity bound on copy-on-write, not a benchmark.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from netemu.workloads.testing import free_port

CHILDREN = 20
LIMIT_KB = 5 * 1024

# The preloaded parent: one line of JSON with the children's PIDs, then it waits to be killed.
PARENT = r"""
import gc, json, os, signal, sys
import netemu.workloads
from netemu.workloads import PortSpec, WorkloadContext, run_builtin

gc.collect()
gc.freeze()
pids = []
for i, port in enumerate(int(p) for p in sys.argv[1:]):
    pid = os.fork()
    if pid == 0:
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            ctx = WorkloadContext(f"echo-{i}", "default", "127.0.0.1", "node-1", "sysnet4admin/echo-hname",
                                  "app", [PortSpec(port)], {}, [])
            run_builtin("echo-hname", ctx, bind_address="127.0.0.1")
        finally:
            os._exit(70)
    pids.append(pid)
print(json.dumps(pids), flush=True)
while True:
    signal.pause()
"""


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))


def _get(port: int) -> int:
    deadline = time.monotonic() + 10
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/")
            status = conn.getresponse().status
            conn.close()
            return status
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="no /proc/<pid>/smaps_rollup")
def test_forked_stand_ins_stay_small():
    ports = [free_port() for _ in range(CHILDREN)]
    parent = subprocess.Popen([sys.executable, "-c", PARENT, *map(str, ports)], stdout=subprocess.PIPE, text=True)
    children: list[int] = []
    try:
        children = json.loads(parent.stdout.readline())
        assert len(children) == CHILDREN
        for port in ports:
            assert all(_get(port) == 200 for _ in range(5))
        sizes = [pss_kb(pid) for pid in children]
        mean = sum(sizes) / len(sizes)
        print(f"\nPss of {CHILDREN} forked echo-hname stand-ins: mean {mean / 1024:.2f} MB, "
              f"min {min(sizes) / 1024:.2f} MB, max {max(sizes) / 1024:.2f} MB; "
              f"parent {pss_kb(parent.pid) / 1024:.2f} MB")
        assert mean < LIMIT_KB
    finally:
        for pid in children:  # the parent's children are killed one by one, by PID
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        parent.kill()
        parent.wait()
