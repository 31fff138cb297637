"""`up`, `down`, `labs`: a lab's life cycle from the command line."""
from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import time

from netemu import paths
from netemu.cli.client import CliError, Client, cmdline_has, daemon_pid, pick_lab
from netemu.procutil import alive
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
    """A lab's Lab spec as it took it: its claim (written by `up` before building), else its state file."""
    from netemu import locks

    return (locks.read_claim(lab) or {}).get("spec")


def _overlaps_running_labs(name: str, spec) -> list[str]:
    """What this lab would take that another lab (up, starting, or crashed and not yet removed) has."""
    from netemu.dataplane import uplink

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
                try:
                    overlap = cidr and ocidr and ipaddress.ip_network(cidr).overlaps(ipaddress.ip_network(ocidr))
                except ValueError:
                    continue
                if overlap:
                    problems.append(f'{what} {cidr} overlaps the {owhat} {ocidr} of lab "{other}"')
        if spec.uplink and ospec.get("uplink"):
            try:
                same = uplink.parse_ref(spec.uplink) == uplink.parse_ref(ospec["uplink"])
            except uplink.UplinkError:
                same = False
            if same:
                problems.append(f'uplink {spec.uplink} is already the uplink of lab "{other}"')
    return problems


def _claim(name: str, lab, args) -> int:
    """Under the host lock: check that the name, the ranges and the uplink are free, and take them (the
    lab's directory, its owner lock, its claim file). Returns the owner lock's descriptor."""
    from netemu import locks
    from netemu.dataplane import uplink
    from netemu.dataplane.hostnet import network_conflicts

    if os.path.isdir(paths.lab_dir(name)):
        pid = daemon_pid(name)
        if pid or locks.owner_alive(name):
            up_pid = ((locks.read_claim(name) or {}).get("up_pid"))
            if not pid or (up_pid and up_pid != os.getpid() and alive(up_pid)
                           and cmdline_has(up_pid, b"netemu")):
                state = "is starting: another `netemu up` is building it"
            else:
                state = "is already up"
            raise CliError(f'lab "{name}" {state} (`netemu down {name}` removes it; or choose another --name)')
        warn(f'lab "{name}" was not shut down cleanly: removing what it left behind')
        from netemu.dataplane.teardown import full_teardown

        full_teardown(name)
    problems = _overlaps_running_labs(name, lab.spec)
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
    owner = locks.claim_owner(name)
    if owner is None:
        raise CliError(f'lab "{name}" is being started or removed by another netemu command: try again')
    spec = lab.spec
    locks.write_claim(name, {"up_pid": os.getpid(), "created": time.time(), "spec": {
        "network": spec.network, "gateway": spec.gateway, "podCIDR": spec.pod_cidr, "serviceCIDR": spec.service_cidr,
        "uplink": spec.uplink, "proxyMode": spec.proxy_mode,
        "nodes": [{"name": n.name, "ip": n.ip} for n in spec.nodes or []]}})
    return owner


def _leftovers(name: str) -> list[str]:
    """What a lab whose control process died has left on the host, in words."""
    from netemu.dataplane import names
    from netemu.dataplane.cgroups import LabCgroups
    from netemu.dataplane.labnet import _present_netns

    out = []
    nss = [n for n in _present_netns() if names.belongs_to(name, n)]
    if nss:
        out.append(f"{len(nss)} network namespace{'s' * (len(nss) != 1)}")
    try:
        procs = len(LabCgroups(name).all_procs())
    except OSError:
        procs = 0
    if procs:
        out.append(f"{procs} process{'es' * (procs != 1)} in its cgroups")
    link = names.host_link(name)
    if os.path.exists(f"/sys/class/net/{link}"):
        out.append(f"the host link {link}")
    try:
        etc = [n for n in os.listdir(paths.ETC_NETNS) if names.belongs_to(name, n)]
    except OSError:
        etc = []
    if etc:
        out.append(f"{len(etc)} director{'ies' if len(etc) != 1 else 'y'} under {paths.ETC_NETNS}")
    if os.path.isdir(paths.lab_dir(name)):
        out.append(paths.lab_dir(name))
    return out


def _died(name: str, pid: int | None, when: str) -> str:
    who = f"its control process (pid {pid})" if pid else "its control process"
    left = _leftovers(name)
    text = f'lab "{name}": {who} died {when}; nothing was rolled back'
    if not left:
        return text + "; nothing of the lab is left on this host"
    log = paths.daemon_log(name)
    return (text + f".\n  Left behind: {', '.join(left)}."
            + (f"\n  Its log: {log}" if os.path.exists(log) else "")
            + f"\n  `netemu down {name}` removes what is left.")


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
    from netemu import locks

    try:
        with locks.host_lock():
            owner = _claim(name, lab, args)
    except locks.LockTimeout as e:
        raise CliError(str(e)) from None
    from netemu.daemon.main import BuildFailed, ControlProcessDied, ControlProcessStopped, spawn

    progress = Progress(quiet=args.quiet)
    try:
        pid = spawn(lab, spec.objects, lambda s: progress.line(s), owner_fd=owner) or daemon_pid(name)
    except BuildFailed as e:
        progress.done()
        raise CliError(f'lab "{name}" could not be built (everything was rolled back): {e}') from None
    except ControlProcessDied as e:
        progress.done()
        raise CliError(_died(name, e.pid, "while the lab was being built")) from None
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
            raise CliError(_died(name, pid, "while waiting for the pods to be Ready")) from None
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
            raise CliError(_died(name, pid, "right after its pods were Ready")) from None
        raise
    print(f'lab "{name}" is up: {len(nodes)} nodes, {len(pods)} pods Ready in {time.time() - t0:.2f}s '
          f"(host gateway {lab.spec.gateway} on {_host_link(name)})")
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


def _check_proxy_mode(mode: str) -> None:
    if mode in ("iptables", "nftables"):
        return
    if mode == "ipvs":
        from netemu.dataplane.proxy.ipvs.kernel import unavailable_message

        problem = unavailable_message()
        if problem:
            raise CliError(problem)
        return
    raise CliError(f"proxy mode {mode} is not implemented yet in netemu; use proxyMode: iptables")


DOWN_ANSWER_SECONDS = 5.0  # a control process that does not answer `down` in this time is killed
DOWN_STOP_SECONDS = 20.0  # one that answered but does not stop in this time, too


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
    from netemu import locks
    from netemu.cli.kubeconfig_cmds import uninstall
    from netemu.dataplane.teardown import full_teardown

    for name in targets:
        t0 = time.time()
        try:
            uninstall(name)
        except Exception as e:  # the kubeconfig is the user's file: never a reason not to remove the lab
            warn(f"lab {name}: could not remove its kubeconfig context: {e}")
        _stop_supervisor(name)  # first: nothing may restart the control process behind our back
        pid = daemon_pid(name)
        deadline = time.time() + 5
        while not pid and time.time() < deadline and locks.owner_alive(name):
            time.sleep(0.05)  # an `up` is starting it: its control process writes its pid in a moment
            pid = daemon_pid(name)
        if pid:
            _stop_control_process(name, pid)
        # the control process is gone: its owner lock with it (an `up` still building holds it a moment)
        owner, exists = locks.wait_owner(name, timeout=10)
        if owner is None and exists:
            warn(f"lab {name}: another netemu command still holds it (an `up` building it?): removing it all the same")
        try:
            removed = full_teardown(name)  # idempotent sweep by name: also cleans after a crash
        finally:
            if owner is not None:
                os.close(owner)
        msg = f'lab "{name}" is down ({time.time() - t0:.2f}s)'
        if not pid:
            msg += f"; its control process was gone, swept {len(removed)} namespaces by name"
        print(msg)
    return 0


def _stop_supervisor(name: str) -> None:
    """Kill the lab's supervisor (SIGKILL: a stopped one too); the control process it runs is left
    for `down` to stop as usual. What it forked last, if anything, is a control process like any other."""
    from netemu.daemon.supervisor import read_pid

    pid = read_pid(name)
    if pid is None:
        return
    _kill(pid)
    deadline = time.time() + 5
    while alive(pid) and time.time() < deadline:
        time.sleep(0.02)


def _stop_control_process(name: str, pid: int) -> None:
    """Ask the control process to stop its pods and remove the lab; kill it if it does not answer
    within a few seconds (stopped, wedged, busy) or does not stop."""
    from netemu.cli.client import LabUnresponsive

    try:
        Client(name, timeout=DOWN_ANSWER_SECONDS).call("down")
    except LabUnresponsive:
        warn(f"lab {name}: its control process (pid {pid}) did not answer within {DOWN_ANSWER_SECONDS:g}s: "
             "killing it")
        _kill_lab_process(name, pid)
        return
    except CliError as e:
        warn(f"lab {name}: its control process (pid {pid}) could not be asked to stop ({e}): killing it")
        _kill_lab_process(name, pid)
        return
    deadline = time.time() + DOWN_STOP_SECONDS
    while alive(pid) and time.time() < deadline:  # it stops the pods and removes the lab itself
        time.sleep(0.05)
    if alive(pid):
        warn(f"lab {name}: the control process did not stop within {DOWN_STOP_SECONDS:g}s: killing it")
        _kill_lab_process(name, pid)


def _kill_lab_process(name: str, pid: int) -> None:
    """SIGKILL the lab's control process, by its pid, once more verified as the lab's (a pid may have
    been reused since it was read); a stopped process dies of SIGKILL too."""
    from netemu.cli.client import _is_lab_process

    if not _is_lab_process(pid, name):
        return
    _kill(pid)
    deadline = time.time() + 5
    while alive(pid) and time.time() < deadline:
        time.sleep(0.02)


def _dead_soon(pid: int, within: float = 2.0) -> bool:
    """Has the process ended, or does it within a moment? (A killed process closes its sockets a little
    before it is gone from /proc.)"""
    deadline = time.time() + within
    while alive(pid):
        if time.time() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _kill(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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

    spec = _lab_spec(name) or {}
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
    return [name, status, spec.get("network", "?"), str(len(spec.get("nodes") or [])), pods,
            spec.get("proxyMode", "?"), str(pid or "-")]


def _status_without_process(name: str) -> str:
    from netemu import locks

    if _supervised(name) and os.path.exists(paths.state_file(name)):
        return "Restarting"  # its supervisor brings a crashed (or wedged, killed) control process back
    return "Starting" if locks.owner_alive(name) else "Crashed"
