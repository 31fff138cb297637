"""A lab's life cycle on this host, below the CLI: what `netemu up` checks and takes before its control
process builds anything, and what `netemu down` does around the control process.

- up's preflight: the host's tools, the proxy mode (IPVS needs the kernel's ip_vs), the name (not up, not
  starting; a lab that crashed is swept first), the uplink (dataplane/uplink.py's refusals), the address
  ranges (no other lab's, none the host routes or holds); then the claim, under the host lock: the lab's
  directory, its owner lock, its claim file.
- down: the lab's supervisor killed, the control process asked to stop (killed when it does not), then
  the sweep.
- the sweep is dataplane/teardown.py's full_teardown, the one the control process runs at its own end:
  by name, needing no state, so it also cleans up after a crash. `down`, `up` over a crashed lab and the
  control process all use it.

The CLI parses, calls these and prints: refusals are LifecycleError with the sentence for the user,
warnings go to the `warn` it passes. lab_overlaps() and host_conflicts() are pure: the lab's ranges
against the other labs' claims and the host's routes and addresses.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import time
from typing import Callable, Optional

from netemu import paths
from netemu.procutil import alive, cmdline_has, daemon_pid, is_lab_process, stat_field, wait_gone

Warn = Callable[[str], None]

REQUIRED_TOOLS = ("ip", "iptables-restore", "nsenter", "conntrack")
DOWN_ANSWER_SECONDS = 5.0  # a control process that does not answer `down` in this time is killed
DOWN_STOP_SECONDS = 20.0  # one that answered but does not stop in this time, too


class LifecycleError(RuntimeError):
    """A refusal or a failure, with a sentence for the user."""


class NoAnswer(Exception):
    """The control process did not answer the request to stop in time (stopped, wedged, busy)."""


class NotAsked(Exception):
    """The control process could not be asked to stop (its socket refuses, it answered an error)."""


# --------------------------------------------------------------------------- up: preflight
def check_tools() -> None:
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise LifecycleError(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")


def check_proxy_mode(mode: str) -> None:
    if mode in ("iptables", "nftables"):
        return
    if mode == "ipvs":
        from netemu.dataplane.proxy.ipvs.kernel import unavailable_message

        problem = unavailable_message()
        if problem:
            raise LifecycleError(problem)
        return
    raise LifecycleError(f"proxy mode {mode} is not implemented yet in netemu; use proxyMode: iptables")


def claimed_spec(lab: str) -> Optional[dict]:
    """A lab's Lab spec as it took it: its claim (written by `up` before building), else its state file."""
    from netemu import locks

    return (locks.read_claim(lab) or {}).get("spec")


def lab_overlaps(name: str, spec, claims: dict[str, dict]) -> list[str]:
    """What lab `name` (its Lab spec) would take that another lab has: `claims` maps the other labs (up,
    starting, or crashed and not yet removed) to their claimed specs."""
    from netemu.dataplane import uplink

    mine = {"lab network": spec.network, "pod CIDR": spec.pod_cidr, "service CIDR": spec.service_cidr}
    # a dual-stack lab's IPv6 ranges (an IPv4 range never overlaps an IPv6 one)
    six = ipv6_ranges(spec)
    mine.update({"IPv6 lab network": six["network6"], "IPv6 pod CIDR": six["podCIDR6"],
                 "IPv6 service CIDR": six["serviceCIDR6"]} if six else {})
    problems = []
    for other, ospec in claims.items():
        if other == name or ospec is None:
            continue
        theirs = {"lab network": ospec.get("network"), "pod CIDR": ospec.get("podCIDR"),
                  "service CIDR": ospec.get("serviceCIDR"), "IPv6 lab network": ospec.get("network6"),
                  "IPv6 pod CIDR": ospec.get("podCIDR6"), "IPv6 service CIDR": ospec.get("serviceCIDR6")}
        for what, cidr in mine.items():
            for owhat, ocidr in theirs.items():
                try:
                    a, b = (ipaddress.ip_network(cidr), ipaddress.ip_network(ocidr)) if cidr and ocidr else (None, None)
                    overlap = a is not None and a.version == b.version and a.overlaps(b)
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


def ipv6_ranges(spec) -> dict[str, Optional[str]]:
    """A dual-stack lab's IPv6 ranges under their claim keys; {} for an IPv4-only lab (what
    netemu.spec.families.dual_stack decides, from a spec that may predate the IPv6 fields)."""
    six = {"network6": getattr(spec, "network6", None), "podCIDR6": getattr(spec, "pod_cidr6", None),
           "serviceCIDR6": getattr(spec, "service_cidr6", None)}
    return six if any(six.values()) else {}


def host_conflicts(network: str, routes: list[dict], links: list[dict], own_link: Optional[str] = None) -> list[str]:
    """Reasons why `network` cannot be a lab's network on a host with these routes (`ip -j route show
    table all`) and links (`ip -j addr show`); `own_link` (the lab's uplink) is left out."""
    from netemu.dataplane.hostnet import overlapping_routes  # lazily, as the other dataplane imports here

    net = ipaddress.ip_network(network)
    problems = []
    for r in overlapping_routes(network, routes, ("local", "broadcast", "multicast", "anycast"), own_link):
        via = f" via {r['gateway']}" if r.get("gateway") else ""
        problems.append(f"route {r['dst']}{via} dev {r.get('dev', '?')} (table {r.get('table', 'main')}) "
                        f"already covers {network}")
    for link in links:
        if link.get("ifname") == own_link:
            continue
        for a in link.get("addr_info", []):
            if a.get("family") != ("inet" if net.version == 4 else "inet6"):
                continue
            iface = ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")
            if iface.network.overlaps(net) or iface.ip in net:
                problems.append(f"address {a['local']}/{a['prefixlen']} on {link['ifname']} is inside {network}")
    return problems


def claim(name: str, lab, force_uplink: bool = False, warn: Warn = lambda s: None) -> int:
    """Under the host lock: check that the name, the ranges and the uplink are free, and take them (the
    lab's directory, its owner lock, its claim file). A lab of that name that crashed is swept first.
    Returns the owner lock's descriptor (the caller closes it once the control process holds its copy)."""
    from netemu import locks

    try:
        with locks.host_lock():
            return _claim(name, lab, force_uplink, warn)
    except locks.LockTimeout as e:
        raise LifecycleError(str(e)) from None


def _claim(name: str, lab, force_uplink: bool, warn: Warn) -> int:
    from netemu import locks
    from netemu.dataplane import hostnet, uplink

    if os.path.isdir(paths.lab_dir(name)):
        pid = daemon_pid(name)
        if pid or locks.owner_alive(name):
            up_pid = ((locks.read_claim(name) or {}).get("up_pid"))
            if not pid or (up_pid and up_pid != os.getpid() and alive(up_pid)
                           and cmdline_has(up_pid, b"netemu")):
                state = "is starting: another `netemu up` is building it"
            else:
                state = "is already up"
            raise LifecycleError(f'lab "{name}" {state} (`netemu down {name}` removes it; or choose another --name)')
        warn(f'lab "{name}" was not shut down cleanly: removing what it left behind')
        sweep(name)
    spec = lab.spec
    problems = lab_overlaps(name, spec, {other: claimed_spec(other) for other in paths.running_labs()
                                         if other != name})
    if spec.uplink:
        try:
            for w in uplink.preflight(spec.uplink, spec.network, force=force_uplink, lab=name,
                                      network6=spec.network6):
                warn(w)
        except uplink.UplinkError as e:
            raise LifecycleError(str(e)) from None
    addresses = hostnet.host_addresses()
    # (an IPv6-only lab's network is IPv6: the host's IPv6 routes)
    routes = hostnet.host_routes(6) if ":" in str(spec.network) else hostnet.host_routes()
    problems += host_conflicts(spec.network, routes, addresses, own_link=uplink.host_side_link(spec.uplink))
    six = ipv6_ranges(spec)
    if six.get("network6"):  # the host must not reach the IPv6 segment some other way either
        problems += host_conflicts(six["network6"], hostnet.host_routes(6), addresses,
                                   own_link=uplink.host_side_link(spec.uplink))
    if problems:
        raise LifecycleError(f'cannot start lab "{name}": its addresses are already in use on this host:\n  - '
                             + "\n  - ".join(problems)
                             + "\n(give the lab other CIDRs in its Lab document: spec.network, spec.podCIDR, "
                               "spec.serviceCIDR" + (" and their IPv6 twins" if six else "") + ")")
    owner = locks.claim_owner(name)
    if owner is None:
        raise LifecycleError(f'lab "{name}" is being started or removed by another netemu command: try again')
    locks.write_claim(name, {"up_pid": os.getpid(), "created": time.time(), "spec": {
        "network": spec.network, "gateway": spec.gateway, "podCIDR": spec.pod_cidr, "serviceCIDR": spec.service_cidr,
        "uplink": spec.uplink, "proxyMode": spec.proxy_mode,
        "nodes": [{"name": n.name, "ip": n.ip} for n in spec.nodes or []],
        **({**six, "gateway6": spec.gateway6} if six else {})}})
    return owner


# --------------------------------------------------------------------------- a crashed lab
def died(name: str, pid: Optional[int], when: str) -> str:
    """What to tell the user when the lab's control process died (`when`): what it left on the host."""
    from netemu.dataplane.teardown import leftovers

    who = f"its control process (pid {pid})" if pid else "its control process"
    left = leftovers(name)
    text = f'lab "{name}": {who} died {when}; nothing was rolled back'
    if not left:
        return text + "; nothing of the lab is left on this host"
    log = paths.daemon_log(name)
    return (text + f".\n  Left behind: {', '.join(left)}."
            + (f"\n  Its log: {log}" if os.path.exists(log) else "")
            + f"\n  `netemu down {name}` removes what is left.")


# --------------------------------------------------------------------------- down
def sweep(name: str) -> list[str]:
    """Remove every trace of the lab by name (dataplane/teardown.py); returns the namespaces removed."""
    from netemu.dataplane.teardown import full_teardown

    return full_teardown(name)


def down(name: str, ask_to_stop: Callable[[], None], warn: Warn = lambda s: None) -> tuple[Optional[int], list[str]]:
    """Remove a lab: its supervisor first (nothing may restart the control process behind our back), then
    its control process, asked with `ask_to_stop` (which raises NoAnswer or NotAsked) to stop its pods and
    remove the lab, killed when it does not; then the sweep, which also cleans up after a crash.
    Returns the control process's pid (None: it was gone) and the namespaces the sweep removed."""
    from netemu import locks

    _stop_supervisor(name)
    pid = daemon_pid(name)
    deadline = time.time() + 5
    while not pid and time.time() < deadline and locks.owner_alive(name):
        time.sleep(0.05)  # an `up` is starting it: its control process writes its pid in a moment
        pid = daemon_pid(name)
    if pid:
        _stop_control_process(name, pid, ask_to_stop, warn)
    # the control process is gone: its owner lock with it (an `up` still building holds it a moment)
    owner, exists = locks.wait_owner(name, timeout=10)
    if owner is None and exists:
        warn(f"lab {name}: another netemu command still holds it (an `up` building it?): removing it all the same")
    try:
        removed = sweep(name)  # idempotent sweep by name: also cleans after a crash
    finally:
        if owner is not None:
            os.close(owner)
    return pid, removed


def _stop_supervisor(name: str) -> None:
    """Kill the lab's supervisor (SIGKILL: a stopped one too); the control process it runs is left
    for `down` to stop as usual. What it forked last, if anything, is a control process like any other."""
    from netemu.daemon.supervisor import read_pid

    pid = read_pid(name)
    if pid is None:
        return
    _kill(pid)
    wait_gone(pid, 5)


def _stop_control_process(name: str, pid: int, ask_to_stop: Callable[[], None], warn: Warn) -> None:
    """Ask the control process to stop its pods and remove the lab; kill it if it does not answer
    within a few seconds (stopped, wedged, busy) or does not stop."""
    if stat_field(pid, 0) in ("T", "t"):  # stopped (SIGSTOP, a debugger): it cannot answer, no use waiting
        warn(f"lab {name}: its control process (pid {pid}) is stopped and did not answer: killing it")
        _kill_lab_process(name, pid)
        return
    try:
        ask_to_stop()
    except NoAnswer:
        warn(f"lab {name}: its control process (pid {pid}) did not answer within {DOWN_ANSWER_SECONDS:g}s: "
             "killing it")
        _kill_lab_process(name, pid)
        return
    except NotAsked as e:
        warn(f"lab {name}: its control process (pid {pid}) could not be asked to stop ({e}): killing it")
        _kill_lab_process(name, pid)
        return
    if not wait_gone(pid, DOWN_STOP_SECONDS, 0.05):  # it stops the pods and removes the lab itself
        warn(f"lab {name}: the control process did not stop within {DOWN_STOP_SECONDS:g}s: killing it")
        _kill_lab_process(name, pid)


def _kill_lab_process(name: str, pid: int) -> None:
    """SIGKILL the lab's control process, by its pid, once more verified as the lab's (a pid may have
    been reused since it was read); a stopped process dies of SIGKILL too."""
    if not is_lab_process(pid, name):
        return
    _kill(pid)
    wait_gone(pid, 5)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
