"""The lab's kubeconfig: merged into the invoking user's kubeconfig at `up` (context netemu-<lab>,
made current, as kind does), removed at `down`, printed by `netemu kubeconfig`."""
from __future__ import annotations

import json
import os
import sys
from typing import Optional

from netemu import paths
from netemu.cli.client import CliError, pick_lab


def _recorded(lab: str) -> str:
    return os.path.join(paths.lab_dir(lab), "kubeconfig.path")


def _server(lab: str) -> str:
    try:
        with open(os.path.join(paths.lab_dir(lab), "apiserver.json")) as f:
            return json.load(f)["server"]
    except (OSError, ValueError, KeyError):
        raise CliError(f'lab "{lab}" has no API server (its control process may have crashed)') from None


def render(lab: str) -> dict:
    from netemu.api import kubeconfig, pki

    try:
        p = pki.load(os.path.join(paths.lab_dir(lab), "pki"))
    except OSError:
        raise CliError(f'lab "{lab}" has no certificates (its control process may have crashed)') from None
    return kubeconfig.render(lab, _server(lab), p)


def install(lab: str) -> Optional[str]:
    """Merge the lab's context into the user's kubeconfig; returns a line to tell the user."""
    from netemu.api import kubeconfig, pki

    path, uid, gid = kubeconfig.target_path()
    try:
        p = pki.load(os.path.join(paths.lab_dir(lab), "pki"))
        path = kubeconfig.merge(path, lab, _server(lab), p, uid, gid)
    except (OSError, kubeconfig.KubeconfigError, CliError) as e:
        print(f"warning: kubectl context not written: {e} (`netemu kubeconfig --lab {lab}` prints it)",
              file=sys.stderr)
        return None
    with open(_recorded(lab), "w") as f:
        f.write(path)
    return f'kubectl: context "{kubeconfig.entry_name(lab)}" ({_server(lab)}) in {path}, now current'


def uninstall(lab: str) -> None:
    from netemu.api import kubeconfig

    try:
        with open(_recorded(lab)) as f:
            path = f.read().strip()
    except OSError:
        return
    if path:
        kubeconfig.remove(path, lab)


def cmd_kubeconfig(args) -> int:
    import yaml

    lab = pick_lab(args.lab)
    sys.stdout.write(yaml.safe_dump(render(lab), sort_keys=False))
    return 0
