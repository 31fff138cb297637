"""`up`, `down`, `labs`: a lab's life cycle from the command line."""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import sys
import time

from netemu import paths
from netemu.cli.client import CliError, Client, daemon_pid, pick_lab
from netemu.cli.output import Progress, warn


def require_root() -> None:
    if os.geteuid() != 0:
        raise CliError("netemu needs root to build namespaces and rules: run it with sudo", code=1)


REQUIRED_TOOLS = ("ip", "iptables-restore", "nsenter", "conntrack")


def _check_tools() -> None:
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise CliError(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")


def _lab_spec(lab: str) -> dict | None:
    try:
        with open(paths.state_file(lab)) as f:
            return json.load(f)["lab"]["spec"]
    except (OSError, ValueError, KeyError):
        return None


def _overlaps_running_labs(name: str, spec) -> list[str]:
    mine = {"lab network": spec.network, "pod CIDR": spec.pod_cidr, "service CIDR": spec.service_cidr}
    problems = []
    for other in paths.running_labs():
        if other == name:
            continue
        ospec = _lab_spec(other)
        if ospec is None:
            continue
        theirs = {"lab network": ospec.get("network"), "pod CIDR": ospec.get("podCIDR"),
                  "service CIDR": ospec.get("serviceCIDR")}
        for what, cidr in mine.items():
            for owhat, ocidr in theirs.items():
                if cidr and ocidr and ipaddress.ip_network(cidr).overlaps(ipaddress.ip_network(ocidr)):
                    problems.append(f'{what} {cidr} overlaps the {owhat} {ocidr} of lab "{other}"')
    return problems


def cmd_up(args) -> int:
    from netemu.spec.load import load_files
    from netemu.spec.errors import SpecError

    t0 = time.time()
    try:
        spec = load_files(args.files, lab_name=args.name)
    except SpecError as e:
        raise CliError(str(e)) from None
    for w in spec.warnings:
        warn(w)
    lab = spec.lab
    if args.proxy_mode:
        lab.spec.proxy_mode = args.proxy_mode
    if args.uplink:
        lab.spec.uplink = args.uplink
    require_root()
    _check_tools()
    name = lab.metadata.name
    _check_proxy_mode(lab.spec.proxy_mode)
    if os.path.isdir(paths.lab_dir(name)):
        if daemon_pid(name):
            raise CliError(f'lab "{name}" is already up (`netemu down {name}` first, or choose another --name)')
        warn(f'lab "{name}" was not shut down cleanly: removing what it left behind')
        from netemu.dataplane.teardown import full_teardown

        full_teardown(name)
    problems = _overlaps_running_labs(name, lab.spec)
    from netemu.dataplane import uplink
    from netemu.dataplane.hostnet import network_conflicts

    if lab.spec.uplink:
        try:
            for w in uplink.preflight(lab.spec.uplink, lab.spec.network,
                                      force=getattr(args, "force_uplink", False), lab=name):
                warn(w)
        except uplink.UplinkError as e:
            raise CliError(str(e)) from None
    problems += network_conflicts(lab.spec.network, own_link=uplink.host_side_link(lab.spec.uplink))
    if problems:
        raise CliError(f'cannot start lab "{name}": its addresses are already in use on this host:\n  - '
                       + "\n  - ".join(problems)
                       + "\n(give the lab other CIDRs in its Lab document: spec.network, spec.podCIDR, spec.serviceCIDR)")
    from netemu.daemon.main import BuildFailed, spawn

    progress = Progress(quiet=args.quiet)
    try:
        spawn(lab, spec.objects, lambda s: progress.line(s))
    except BuildFailed as e:
        progress.done()
        raise CliError(f'lab "{name}" could not be built (everything was rolled back): {e}') from None
    from netemu.cli.kubeconfig_cmds import install

    kube_line = install(name)
    if args.no_wait:
        progress.done()
        print(f'lab "{name}" is up (not waiting for pods)')
        return 0
    client = Client(name, timeout=None)
    try:
        client.wait(lambda msg, final: progress.status(msg), timeout=args.timeout)
    except CliError as e:
        progress.done()
        raise CliError(f'lab "{name}" is up but not ready: {e}\n  (see `netemu get pods -o wide --lab {name}`)')
    except KeyboardInterrupt:
        progress.done()
        print(f'\ninterrupted: lab "{name}" stays up; `netemu down {name}` removes it', file=sys.stderr)
        return 130
    progress.done()
    nodes = client.call("get", kind="Node")
    pods = client.call("get", kind="Pod")
    print(f'lab "{name}" is up: {len(nodes)} nodes, {len(pods)} pods Ready in {time.time() - t0:.2f}s '
          f"(host gateway {lab.spec.gateway} on {_host_link(name)})")
    if kube_line and not args.quiet:
        print(kube_line)
    return 0


def _host_link(name: str) -> str:
    from netemu.dataplane.names import host_link

    return host_link(name)


def _check_proxy_mode(mode: str) -> None:
    if mode in ("iptables", "nftables"):
        return
    if mode == "ipvs":
        from netemu.dataplane.ipvsapply import unavailable_message

        problem = unavailable_message()
        if problem:
            raise CliError(problem)
        return
    raise CliError(f"proxy mode {mode} is not implemented yet in netemu; use proxyMode: iptables")


def cmd_down(args) -> int:
    require_root()
    labs = paths.running_labs()
    if args.all:
        targets = labs
    else:
        targets = [pick_lab(args.lab_name or args.lab)]
    if not targets:
        print("no lab is up")
        return 0
    from netemu.cli.kubeconfig_cmds import uninstall
    from netemu.dataplane.teardown import full_teardown

    for name in targets:
        t0 = time.time()
        uninstall(name)
        pid = daemon_pid(name)
        if pid:
            try:
                Client(name, timeout=10).call("down")
            except CliError:
                pass
            for _ in range(300):  # the control process stops pods and removes the lab itself
                if not _alive(pid):
                    break
                time.sleep(0.05)
            else:
                warn(f"lab {name}: the control process did not stop; killing it")
                _kill(pid)
        removed = full_teardown(name)  # idempotent sweep by name: also cleans after a crash
        msg = f'lab "{name}" is down ({time.time() - t0:.2f}s)'
        if not pid:
            msg += f"; its control process was gone, swept {len(removed)} namespaces by name"
        print(msg)
    return 0


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it is done)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def cmd_labs(args) -> int:
    from netemu.cli.tables import render

    rows = []
    for name in paths.running_labs():
        spec = _lab_spec(name) or {}
        pid = daemon_pid(name)
        status = "Running" if pid else "Crashed"
        pods = "?"
        if pid:
            try:
                pods = str(len(Client(name, timeout=5).call("get", kind="Pod")))
            except CliError:
                status = "Unreachable"
        rows.append([name, status, spec.get("network", "?"), str(len(spec.get("nodes") or [])), pods,
                     spec.get("proxyMode", "?"), str(pid or "-")])
    if not rows:
        print("no lab is up")
        return 0
    print(render(["NAME", "STATUS", "NETWORK", "NODES", "PODS", "PROXY", "PID"], rows))
    return 0
