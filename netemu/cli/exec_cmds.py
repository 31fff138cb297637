"""`exec` and `logs`: into a pod's namespaces, and its output."""
from __future__ import annotations

import os
import sys
import time

from netemu.cli.client import CliError, Client, pick_lab
from netemu.dataplane import podexec


def _runtime(args, container: str | None = None) -> dict:
    client = Client(pick_lab(args.lab))
    fields = {"container": container} if container else {}
    return client.call("runtime", namespace=args.namespace or "default", name=args.pod, **fields)


def _router(args) -> dict | None:
    """A lab router named like the target (routers and pods never share names with nodes; a pod
    of that name in the namespace asked for wins)."""
    client = Client(pick_lab(args.lab))
    try:
        return client.call("router", name=args.pod)
    except CliError:
        return None


def _exec_router(router: dict, command: list[str]) -> int:
    """Into a router's namespace (`ip netns exec`); vtysh reaches the router's own FRR."""
    command = list(command)
    if command and command[0] == "vtysh" and "--vty_socket" not in command:
        command[1:1] = ["--vty_socket", router["frr_dir"]]
    argv = ["/usr/bin/env", "ip", "netns", "exec", router["netns"], *command]
    sys.stdout.flush()
    os.execv(argv[0], argv)


def cmd_exec(args) -> int:
    if not args.command:
        raise CliError("exec needs a command: netemu exec POD -- COMMAND [ARGS...]")
    router = _router(args)
    if router is not None:
        return _exec_router(router, args.command)
    rt = _runtime(args, args.container)
    if rt.get("enter") is None:
        name = args.container or next(iter(rt["containers"]), "")
        raise CliError(f'container "{name}" in pod "{args.pod}" is not running (it is being restarted, or exited)')
    # join the pod's cgroup first: what we start belongs to the pod and dies with it
    for d in rt["cgroups"]:
        try:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            pass
    # the container's namespaces, user and capabilities (netemu.dataplane.podexec)
    argv = podexec.command(rt["enter"], args.command)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "TERM": os.environ.get("TERM", "xterm"), "HOSTNAME": args.pod, "LANG": "C.UTF-8"}
    sys.stdout.flush()
    os.execve(argv[0], argv, env)


def cmd_logs(args) -> int:
    rt = _runtime(args)
    containers = rt["containers"]
    name = args.container or next(iter(containers))
    if name not in containers:
        raise CliError(f'container {name} is not valid for pod {args.pod}: one of {", ".join(containers)}')
    path = containers[name]["log"]
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return 0
    with f:
        data = f.read()
        lines = data.splitlines(keepends=True)
        if args.tail is not None and args.tail >= 0:
            lines = lines[-args.tail:] if args.tail else []
        sys.stdout.buffer.write(b"".join(lines))
        sys.stdout.flush()
        if not args.follow:
            return 0
        try:
            while True:
                chunk = f.read()
                if chunk:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                else:
                    if not os.path.exists(path):
                        return 0
                    time.sleep(0.2)
        except KeyboardInterrupt:
            return 0
