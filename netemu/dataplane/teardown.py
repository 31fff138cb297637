"""Removing every trace of a lab by name: processes (through the lab's cgroups), namespaces,
the host link, /etc/netns entries, cgroups and files. It needs no state, so it works after a crash
at any moment, and running it twice is harmless. The one sweep: `netemu down` and `up` over a crashed
lab run it (netemu/daemon/lifecycle.py), and so does the control process at its own end.
leftovers() says, in words, what it would remove."""
from __future__ import annotations

import os
import shutil
import sys

from netemu import paths
from netemu.dataplane.cgroups import LabCgroups
from netemu.dataplane import names
from netemu.dataplane.labnet import _present_netns, sweep


def full_teardown(lab: str, exclude_pids: tuple[int, ...] = ()) -> list[str]:
    from netemu import locks

    others = [x for x in paths.running_labs() if x != lab]
    # a lab started before kernel object names had a separator of their own has no claim file
    legacy = os.path.isdir(paths.lab_dir(lab)) and not os.path.exists(locks.claim_file(lab))
    cg = LabCgroups(lab)
    for pid in exclude_pids:
        cg.leave(pid)
    from netemu.dataplane import frr

    frr.sweep(lab)  # FRR daemons by their pid files (also where cgroups are not available)
    cg.teardown(exclude=exclude_pids)
    from netemu.dataplane import uplink

    for msg in uplink.detach(lab):  # before the sweep: deleting the segment's namespace would lose it
        print(f"netemu: {msg}", file=sys.stderr)
    try:
        removed = sweep(lab, others, legacy=legacy)
    except TypeError:  # a control process started before `legacy` existed runs its own, older sweep
        removed = sweep(lab, others)
    shutil.rmtree(paths.lab_dir(lab), ignore_errors=True)
    locks.remove_run_dir_if_unused()
    return removed


def leftovers(lab: str) -> list[str]:
    """What a lab whose control process died has left on the host, in words."""
    out = []
    nss = [n for n in _present_netns() if names.belongs_to(lab, n)]
    if nss:
        out.append(f"{len(nss)} network namespace{'s' * (len(nss) != 1)}")
    try:
        procs = len(LabCgroups(lab).all_procs())
    except OSError:
        procs = 0
    if procs:
        out.append(f"{procs} process{'es' * (procs != 1)} in its cgroups")
    link = names.host_link(lab)
    if os.path.exists(f"/sys/class/net/{link}"):
        out.append(f"the host link {link}")
    try:
        etc = [n for n in os.listdir(paths.ETC_NETNS) if names.belongs_to(lab, n)]
    except OSError:
        etc = []
    if etc:
        out.append(f"{len(etc)} director{'ies' if len(etc) != 1 else 'y'} under {paths.ETC_NETNS}")
    if os.path.isdir(paths.lab_dir(lab)):
        out.append(paths.lab_dir(lab))
    return out
