"""Removing every trace of a lab by name: processes (through the lab's cgroups), namespaces,
the host link, /etc/netns entries, cgroups and files. It needs no state, so it works after a crash
at any moment, and running it twice is harmless."""
from __future__ import annotations

import os
import shutil
import sys

from netemu import paths
from netemu.dataplane.cgroups import LabCgroups
from netemu.dataplane.labnet import sweep


def full_teardown(lab: str, exclude_pids: tuple[int, ...] = ()) -> list[str]:
    from netemu import locks

    others = [x for x in paths.running_labs() if x != lab]
    # a lab started before kernel object names had a separator of their own has no claim file
    legacy = os.path.isdir(paths.lab_dir(lab)) and not os.path.exists(locks.claim_file(lab))
    cg = LabCgroups(lab)
    for pid in exclude_pids:
        cg.leave(pid)
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
