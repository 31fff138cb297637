"""`up`, `down`, `labs`: a lab's life cycle from the command line. What `up` checks and claims before
building, and what `down` stops and sweeps, is netemu/daemon/lifecycle.py: here the arguments, the
waiting for Ready and what is printed."""
from __future__ import annotations

import os
import sys
import time

from netemu import paths
from netemu.cli.client import CliError, Client, pick_lab
from netemu.cli.output import Progress, warn
from netemu.daemon import lifecycle
from netemu.procutil import cmdline_has, daemon_pid, wait_gone


def require_root() -> None:
    if os.geteuid() != 0:
        raise CliError("netemu needs root to build namespaces and rules: run it with sudo", code=1)


def cmd_up(args) -> int:
    from netemu.daemon.spawn import prefork

    early = prefork()  # the control process's modules load on the other CPU while the lab file is read
    try:
        return _up(args, early)
    finally:
        early.discard()  # unless it was handed the lab


def _up(args, early) -> int:
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
    name = lab.metadata.name
    try:
        lifecycle.check_tools()
        lifecycle.check_proxy_mode(lab.spec.proxy_mode)
        owner = lifecycle.claim(name, lab, force_uplink=getattr(args, "force_uplink", False), warn=warn)
    except lifecycle.LifecycleError as e:
        raise CliError(str(e)) from None
    from netemu.daemon.spawn import BuildFailed, ControlProcessDied, ControlProcessStopped, spawn

    progress = Progress(quiet=args.quiet)
    try:
        pid = spawn(lab, spec.objects, lambda s: progress.line(s), owner_fd=owner, early=early) or daemon_pid(name)
    except BuildFailed as e:
        progress.done()
        raise CliError(f'lab "{name}" could not be built (everything was rolled back): {e}') from None
    except ControlProcessDied as e:
        progress.done()
        raise CliError(lifecycle.died(name, e.pid, "while the lab was being built")) from None
    except ControlProcessStopped as e:
        progress.done()
        raise CliError(f'lab "{name}": its control process (pid {e.pid}) is stopped (SIGSTOP) in the middle of '
                       f"its build: `kill -CONT {e.pid}` lets it go on, `netemu down {name}` removes the lab") from None
    finally:
        os.close(owner)  # the control process holds its own copy of the owner lock
    from netemu.cli.kubeconfig_cmds import install

    kube_line = install(name)
    if args.no_wait:
        progress.done()
        print(f'lab "{name}" is up (not waiting for pods)')
        return 0
    client = Client(name, timeout=args.timeout + 30)
    try:
        _wait_ready(name, client, progress, args.timeout)
    except CliError as e:
        progress.done()
        if pid and _dead_soon(pid) and not _supervised(name):
            raise CliError(lifecycle.died(name, pid, "while waiting for the pods to be Ready")) from None
        raise CliError(f'lab "{name}" is up but not ready: {e}\n  (see `netemu get pods -o wide --lab {name}`)') from None
    except KeyboardInterrupt:
        progress.done()
        print(f'\ninterrupted: lab "{name}" stays up; `netemu down {name}` removes it', file=sys.stderr)
        return 130
    progress.done()
    from netemu.cli.kinds import by_kind, list_objects

    try:
        nodes = list_objects(client, by_kind("Node"))
        pods = list_objects(client, by_kind("Pod"))
    except CliError:
        if pid and _dead_soon(pid):
            raise CliError(lifecycle.died(name, pid, "right after its pods were Ready")) from None
        raise
    print(f'lab "{name}" is up: {len(nodes)} nodes, {len(pods)} pods Ready in {time.time() - t0:.2f}s '
          f"(host gateway {host_gateway(lab.spec)} on {_host_link(name)})")
    if kube_line and not args.quiet:
        print(kube_line)
    return 0


RESTART_WAIT_SECONDS = 60.0  # how long `up` waits for a supervisor to bring a crashed control process back


def _supervised(name: str) -> bool:
    from netemu.daemon.supervisor import read_pid

    return read_pid(name) is not None


def _wait_ready(name: str, client, progress, timeout: float) -> None:
    """Wait for the lab's pods to be Ready. A control process that dies meanwhile and is restarted by the
    lab's supervisor is waited for, and the wait goes on with the new one."""
    from netemu.cli.client import LabConnectionLost, LabNotRunning

    deadline = time.time() + timeout
    while True:
        try:
            client.wait(lambda msg, final: progress.status(msg), timeout=max(1.0, deadline - time.time()))
            return
        except (LabConnectionLost, LabNotRunning):
            if not _supervised(name) or time.time() >= deadline:
                raise
        progress.status("the control process died: waiting for its supervisor to restart it")
        until = time.time() + RESTART_WAIT_SECONDS
        while time.time() < until and _supervised(name):
            pid = daemon_pid(name)
            if pid:
                try:
                    Client(name, timeout=2).call("ping")
                    break
                except CliError:
                    pass
            time.sleep(0.2)
        else:
            raise CliError(f'lab "{name}": its control process died and was not restarted within '
                           f"{RESTART_WAIT_SECONDS:g}s (`netemu labs` shows its state)")


def _host_link(name: str) -> str:
    from netemu.dataplane.names import host_link

    return host_link(name)


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

    for name in targets:
        t0 = time.time()
        try:
            uninstall(name)
        except Exception as e:  # the kubeconfig is the user's file: never a reason not to remove the lab
            warn(f"lab {name}: could not remove its kubeconfig context: {e}")
        pid, removed = lifecycle.down(name, lambda: _ask_to_stop(name), warn=warn)
        msg = f'lab "{name}" is down ({time.time() - t0:.2f}s)'
        if not pid:
            msg += f"; its control process was gone, swept {len(removed)} namespaces by name"
        print(msg)
    return 0


def _ask_to_stop(name: str) -> None:
    """Ask the lab's control process to stop its pods and remove the lab (`down` on its socket)."""
    from netemu.cli.client import LabUnresponsive

    try:
        Client(name, timeout=lifecycle.DOWN_ANSWER_SECONDS).call("down")
    except LabUnresponsive as e:
        raise lifecycle.NoAnswer(str(e)) from None
    except CliError as e:
        raise lifecycle.NotAsked(str(e)) from None


def _dead_soon(pid: int, within: float = 2.0) -> bool:
    """Has the process ended, or does it within a moment? (A killed process closes its sockets a little
    before it is gone from /proc.)"""
    return wait_gone(pid, within)


LABS_ANSWER_SECONDS = 2.0


def cmd_labs(args) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from netemu.cli.tables import render

    if os.geteuid() != 0:
        raise CliError("netemu labs needs root to see the labs' state (their files are root's): "
                       "run it with sudo", code=1)
    names = paths.running_labs()
    if not names:
        print("no lab is up")
        return 0
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        rows = list(pool.map(_lab_row, names))
    print(render(["NAME", "STATUS", "NETWORK", "NODES", "PODS", "PROXY", "PID"], rows))
    return 0


def _lab_row(name: str) -> list[str]:
    """One line of `netemu labs`: Running, NotResponding (alive, no answer within a short time: stopped,
    or wedged until its supervisor's liveness check restarts it), Restarting (its supervisor brings a
    crashed or wedged control process back: none yet, or a restarted one that does not serve yet),
    Starting, Crashed (no control process), Unreachable (alive, but its socket refuses)."""
    from netemu.cli.client import LabConnectionLost, LabNotRunning, LabUnresponsive
    from netemu.cli.kinds import by_kind, list_objects

    spec = lifecycle.claimed_spec(name) or {}
    pid = daemon_pid(name)
    pods = "?"
    if not pid:
        status = _status_without_process(name)
    else:
        status = "Running"
        try:
            pods = str(len(list_objects(Client(name, timeout=LABS_ANSWER_SECONDS), by_kind("Pod"))))
        except LabUnresponsive:
            status = "NotResponding"
        except (LabNotRunning, LabConnectionLost):
            if _dead_soon(pid, within=0.5):  # killed meanwhile (its supervisor's liveness check, say)
                status, pid = _status_without_process(name), None
            elif cmdline_has(pid, b"--resume") and _supervised(name):
                status = "Restarting"  # a restarted control process, resuming: it does not serve yet
            else:
                status = "Unreachable"
        except CliError:
            status = "Unreachable"
        except Exception:  # whatever one lab answers, the others are still listed
            status = "Unreachable"
    return [name, status, lab_network(spec), str(len(spec.get("nodes") or [])), pods,
            spec.get("proxyMode", "?"), str(pid or "-")]


def host_gateway(spec) -> str:
    """The host's addresses on the lab segment (a LabSpec): a dual-stack lab's IPv6 one beside the IPv4 one."""
    gateway6 = getattr(spec, "gateway6", None) if getattr(spec, "network6", None) else None
    return f"{spec.gateway},{gateway6}" if gateway6 else spec.gateway


def lab_network(spec: dict) -> str:
    """The NETWORK column: the lab segment, a dual-stack lab's with its IPv6 twin as kubeadm writes them
    ("192.168.1.0/24,fd00:192:168:1::/64")."""
    network = spec.get("network", "?")
    return f"{network},{spec['network6']}" if spec.get("network6") else network


def _status_without_process(name: str) -> str:
    from netemu import locks

    if _supervised(name) and os.path.exists(paths.state_file(name)):
        return "Restarting"  # its supervisor brings a crashed (or wedged, killed) control process back
    return "Starting" if locks.owner_alive(name) else "Crashed"
