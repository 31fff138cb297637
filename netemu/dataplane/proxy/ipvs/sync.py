"""kube-proxy's IPVS-mode sync as a pure diff: (what the node has, what it should have) -> commands.

kube-proxy's IPVS proxier does not reload everything on a sync: it lists what the kernel has and
changes only the difference (syncService: add or update a virtual server; syncEndpoint: add real
servers, gracefully delete the ones that went away; cleanLegacyService: delete virtual servers no
Service wants; syncIPSetEntries: add/del set members; unbind superfluous addresses from kube-ipvs0).
This module computes that difference as a list of Steps (argv + stdin, run inside the node's network
namespace), so the same plan can be executed by netemu's applier or written out as a shell script
(the throwaway-VM test replays exactly these commands).

Graceful deletion (graceful_termination.go): a TCP real server that leaves keeps its connections:
it gets weight 0 and is deleted once it has no active or inactive connection (the applier checks
that with `ipvsadm -Ln`, see reap_plan). UDP and SCTP real servers are deleted at once.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Optional

from netemu.dataplane.proxy.addresses import IPV4, parse_ip
from netemu.dataplane.proxy.ipvs.render import (
    DUMMY_DEVICE,
    FILTER_CHAINS,
    IPSETS,
    NAT_CHAINS,
    OPTION_PROTOCOL,
    IpvsRenderer,
    IpvsRuleset,
    IpvsSettings,
    RealServer,
    VirtualServer,
    base_jump_rules,
    ipset_create_line,
    set_name,
)
from netemu.dataplane.proxy.view import NodeProxyView

VSKey = tuple[str, str, int]      # (protocol, address, port)
RSKey = tuple[str, int]           # (address, port)
GRACEFUL_PROTOCOLS = ("TCP",)     # IsRsGracefulTerminationNeeded: not UDP, not SCTP


@dataclass(frozen=True)
class IpvsState:
    """What a node has (observed from the kernel, or the result of the last applied plan)."""

    services: Mapping[VSKey, VirtualServer] = field(default_factory=dict)
    dests: Mapping[VSKey, Mapping[RSKey, int]] = field(default_factory=dict)     # weights
    addresses: Optional[frozenset[str]] = None    # on kube-ipvs0; None: no kube-ipvs0 yet
    ipsets: Mapping[str, frozenset[str]] = field(default_factory=dict)          # by actual set name
    iptables: Optional[str] = None                # last payload written (None: unknown, rewrite)
    jumps: frozenset[tuple[str, str, str]] = frozenset()   # base jumps present (base_jump_rules())
    sysctls_done: bool = False

    @classmethod
    def empty(cls) -> "IpvsState":
        """A fresh node namespace."""
        return cls()

    @classmethod
    def of(cls, ruleset: IpvsRuleset) -> "IpvsState":
        return cls(
            services={s.vs.key: s.vs for s in ruleset.services},
            dests={s.vs.key: {rs.key: rs.weight for rs in s.real_servers} for s in ruleset.services},
            addresses=frozenset(ruleset.addresses),
            ipsets={set_name(n, ruleset.ip_family): e for n, e in ruleset.ipset_entries.items()},
            iptables=ruleset.iptables_restore(),
            jumps=frozenset(base_jump_rules()),
            sysctls_done=True,
        )

    @classmethod
    def parse(cls, ipvsadm_save: str, addresses: Optional[Iterable[str]], ipset_save: str,
              iptables_save: str = "") -> "IpvsState":
        """Observed state: `ipvsadm-save -n`, the addresses of kube-ipvs0 (None if it does not
        exist), `ipset save`, and `iptables-save` (for kube-proxy's jumps)."""
        services, dests = parse_ipvsadm_save(ipvsadm_save)
        sets: dict[str, set[str]] = {}
        for line in ipset_save.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "create" and parts[1].startswith("KUBE-"):
                sets.setdefault(parts[1], set())
            elif len(parts) >= 3 and parts[0] == "add" and parts[1] in sets:
                sets[parts[1]].add(parts[2])
        present = frozenset(j for j in base_jump_rules() if _has_jump(iptables_save, j))
        return cls(services, dests, None if addresses is None else frozenset(addresses),
                   {k: frozenset(v) for k, v in sets.items()}, None, present, False)


def _has_jump(save: str, jump: tuple[str, str, str]) -> bool:
    table, chain, args = jump
    section, found = None, False
    for line in save.splitlines():
        if line.startswith("*"):
            section = line[1:].strip()
        elif section == table and line.startswith(f"-A {chain} ") and line[len(f"-A {chain} "):] == args:
            found = True
    return found


def _split_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    addr = parse_ip(host)
    return (str(addr) if addr is not None else host), int(port)


def parse_ipvsadm_save(text: str) -> tuple[dict[VSKey, VirtualServer], dict[VSKey, dict[RSKey, int]]]:
    """`ipvsadm-save -n` -> virtual servers and real-server weights."""
    services: dict[VSKey, VirtualServer] = {}
    dests: dict[VSKey, dict[RSKey, int]] = {}
    for line in text.splitlines():
        args = shlex.split(line)
        if len(args) < 3 or args[0] not in ("-A", "-a") or args[1] not in OPTION_PROTOCOL:
            continue
        proto = OPTION_PROTOCOL[args[1]]
        addr, port = _split_host_port(args[2])
        key = (proto, addr, port)
        opts = dict(zip(args[3::2], args[4::2])) if args[0] == "-A" else {}
        if args[0] == "-A":
            flags, timeout = 0, 0
            if "-p" in args[3:]:
                flags |= 0x1
                timeout = int(opts.get("-p", "300"))
            if "-b" in args[3:]:
                flags |= 0x10
            services[key] = VirtualServer(proto, addr, port, opts.get("-s", "wlc"), flags, timeout)
            dests.setdefault(key, {})
        else:
            rest = args[3:]
            r = rest.index("-r") if "-r" in rest else -1
            if r < 0:
                continue
            raddr, rport = _split_host_port(rest[r + 1])
            weight = int(rest[rest.index("-w") + 1]) if "-w" in rest else 1
            dests.setdefault(key, {})[(raddr, rport)] = weight
    return services, dests


def parse_ipvsadm_list(text: str) -> dict[tuple[VSKey, RSKey], int]:
    """`ipvsadm -Ln` -> active + inactive connections of every real server."""
    out: dict[tuple[VSKey, RSKey], int] = {}
    current: Optional[VSKey] = None
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] in ("TCP", "UDP", "SCTP") and len(parts) >= 2:
            addr, port = _split_host_port(parts[1])
            current = (parts[0], addr, port)
        elif parts[0] == "->" and current is not None and len(parts) >= 6 and parts[1][:1] not in ("R", ""):
            try:  # "-> RemoteAddress:Port Forward Weight ActiveConn InActConn" (the header has no digits)
                raddr, rport = _split_host_port(parts[1])
                out[(current, (raddr, rport))] = int(parts[4]) + int(parts[5])
            except ValueError:
                continue
    return out


# --------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class Step:
    """One command run inside the node's network namespace."""

    name: str
    argv: tuple[str, ...]
    stdin: Optional[str] = None

    @property
    def lines(self) -> int:
        return 1 + (self.stdin.count("\n") if self.stdin else 0)

    def shell(self, netns: Optional[str] = None, enter: str = "nsenter --net=/run/netns/{netns} --") -> str:
        cmd = " ".join(shlex.quote(a) for a in self.argv)
        if netns:
            cmd = enter.format(netns=shlex.quote(netns)) + " " + cmd
        if self.stdin is None:
            return cmd
        body = self.stdin if self.stdin.endswith("\n") else self.stdin + "\n"
        assert "\nNETEMU_EOF\n" not in "\n" + body
        return f"{cmd} <<'NETEMU_EOF'\n{body}NETEMU_EOF"


@dataclass(frozen=True)
class SyncPlan:
    steps: tuple[Step, ...]
    state: IpvsState                                   # what the node has once the plan ran
    graceful: frozenset[tuple[VSKey, RSKey]]           # weight-0 real servers waiting to be deleted
    full: bool = False
    ruleset: Optional[IpvsRuleset] = None

    @property
    def empty(self) -> bool:
        return not self.steps

    @property
    def lines(self) -> int:
        return sum(s.lines for s in self.steps)

    def shell(self, netns: Optional[str] = None, enter: str = "nsenter --net=/run/netns/{netns} --") -> str:
        """The plan as a POSIX shell script fragment (`set -e` is the caller's choice)."""
        return "".join(f"# {s.name}\n{s.shell(netns, enter)}\n" for s in self.steps)


def _bits(ip_family: str) -> int:
    return 32 if ip_family == IPV4 else 128


def plan_sync(base: IpvsState, ruleset: IpvsRuleset, *, graceful: Iterable[tuple[VSKey, RSKey]] = (),
              iptables_restore: str = "iptables-restore", full: bool = False) -> SyncPlan:
    """The commands that turn `base` into `ruleset`, in kube-proxy's order: kube-ipvs0 and its new
    addresses, ipset members, virtual/real servers, sysctls, iptables; then the addresses and
    virtual servers that are no longer wanted."""
    fam = ruleset.ip_family
    bits = _bits(fam)
    graceful_now = set(graceful)
    steps: list[Step] = []

    # kube-ipvs0 (down, as kube-proxy leaves it: the kernel adds local routes for its addresses anyway)
    want_addrs = frozenset(ruleset.addresses)
    have_addrs = base.addresses or frozenset()
    link = []
    if base.addresses is None:
        link.append(f"link add {DUMMY_DEVICE} type dummy")
    link += [f"address add {a}/{bits} dev {DUMMY_DEVICE}" for a in ruleset.addresses if a not in have_addrs]
    if link:
        steps.append(Step("kube-ipvs0", ("ip", "-batch", "-"), "\n".join(link) + "\n"))

    # ipsets: every set exists (create -exist), members added and deleted
    ipset_lines = []
    want_sets = {set_name(n, fam): e for n, e in ruleset.ipset_entries.items()}
    for info in IPSETS:
        name = set_name(info.name, fam)
        have = base.ipsets.get(name)
        if have is None:
            ipset_lines.append(ipset_create_line(info, fam))
            have = frozenset()
        want = want_sets.get(name, frozenset())
        ipset_lines += [f"del {name} {e}" for e in sorted(have - want)]
        ipset_lines += [f"add {name} {e}" for e in sorted(want - have)]
    if ipset_lines:
        steps.append(Step("ipset", ("ipset", "-exist", "restore"), "\n".join(ipset_lines) + "\n"))

    # virtual and real servers
    ipvs_lines = []
    new_dests: dict[VSKey, dict[RSKey, int]] = {}
    for s in ruleset.services:
        vs, key = s.vs, s.vs.key
        old = base.services.get(key)
        if old is None:
            ipvs_lines.append(f"-A {vs.ipvsadm_args()}")
        elif (old.scheduler, old.flags, old.timeout) != (vs.scheduler, vs.flags, vs.timeout):
            ipvs_lines.append(f"-E {vs.ipvsadm_args()}")
        have = dict(base.dests.get(key, {})) if old is not None else {}
        dests: dict[RSKey, int] = {}
        for rs in s.real_servers:
            w = have.pop(rs.key, None)
            graceful_now.discard((key, rs.key))
            if w is None:
                ipvs_lines.append(f"-a {vs.service_arg} -r {rs} -m -w {rs.weight}")
            elif w != rs.weight:  # back from graceful deletion, or a weight left by someone else
                ipvs_lines.append(f"-e {vs.service_arg} -r {rs} -m -w {rs.weight}")
            dests[rs.key] = rs.weight
        for rkey, w in sorted(have.items()):
            rs = RealServer(rkey[0], rkey[1], 0)
            if vs.protocol in GRACEFUL_PROTOCOLS:
                if w != 0:
                    ipvs_lines.append(f"-e {vs.service_arg} -r {rs} -m -w 0")
                graceful_now.add((key, rkey))
                dests[rkey] = 0
            else:
                ipvs_lines.append(f"-d {vs.service_arg} -r {rs}")
                graceful_now.discard((key, rkey))
        new_dests[key] = dests
    if ipvs_lines:
        steps.append(Step("ipvs", ("ipvsadm", "-R"), "\n".join(ipvs_lines) + "\n"))

    if not base.sysctls_done and ruleset.sysctls:
        # after ipvsadm: net.ipv4.vs.* exist once ip_vs is loaded
        pre = [] if ipvs_lines else [Step("ipvs-probe", ("ipvsadm", "-L", "-n"))]
        steps += pre + [Step("sysctl", ("sysctl", "-q", "-w", *(f"{k}={v}" for k, v in ruleset.sysctls)))]

    # iptables: kube-proxy's chains (a fixed, small set) rewritten when they change
    payload = ruleset.iptables_restore()
    missing = [j for j in base_jump_rules() if j not in base.jumps]
    if payload != base.iptables or missing:
        steps.append(Step("iptables", (iptables_restore, "--noflush", "-w"), _with_jumps(payload, missing)))

    # what is no longer wanted
    unbind = sorted(have_addrs - want_addrs)
    if unbind:
        steps.append(Step("unbind", ("ip", "-batch", "-"),
                          "".join(f"address del {a}/{bits} dev {DUMMY_DEVICE}\n" for a in unbind)))
    wanted_keys = {s.vs.key for s in ruleset.services}
    legacy = [vs for key, vs in sorted(base.services.items()) if key not in wanted_keys]
    if legacy:
        steps.append(Step("ipvs-delete", ("ipvsadm", "-R"), "".join(f"-D {vs.service_arg}\n" for vs in legacy)))
        graceful_now = {g for g in graceful_now if g[0] in wanted_keys}

    state = IpvsState(
        services={s.vs.key: s.vs for s in ruleset.services},
        dests=new_dests,
        addresses=want_addrs,
        ipsets={**base.ipsets, **{k: v for k, v in want_sets.items()}},
        iptables=payload,
        jumps=frozenset(base_jump_rules()),
        sysctls_done=base.sysctls_done or bool(ruleset.sysctls),
    )
    return SyncPlan(tuple(steps), state, frozenset(graceful_now), full, ruleset)


def _with_jumps(payload: str, jumps: list[tuple[str, str, str]]) -> str:
    """Insert kube-proxy's `-I <builtin> 1 ...` jumps into the payload's table sections, after the
    chain declarations (so the KUBE-* targets exist)."""
    if not jumps:
        return payload
    out, table = [], None
    declared = {"nat": len(NAT_CHAINS), "filter": len(FILTER_CHAINS)}
    count = 0
    for line in payload.splitlines():
        out.append(line)
        if line.startswith("*"):
            table, count = line[1:], 0
        elif line.startswith(":") and table is not None:
            count += 1
            if count == declared.get(table):
                out += [f"-I {frm} 1 {args}" for t, frm, args in jumps if t == table]
    return "\n".join(out) + "\n"


def reap_plan(state: IpvsState, graceful: Iterable[tuple[VSKey, RSKey]],
              connections: Mapping[tuple[VSKey, RSKey], int]) -> tuple[Optional[Step], IpvsState, frozenset]:
    """Delete the gracefully-terminating real servers that have no connection left (tryDeleteRs).
    `connections` is parse_ipvsadm_list(`ipvsadm -Ln`). Returns (step or None, new state, still pending)."""
    done, pending = [], set()
    for g in graceful:
        key, rkey = g
        if key not in state.services or rkey not in state.dests.get(key, {}):
            continue
        if connections.get(g, 0) == 0:
            done.append(g)
        else:
            pending.add(g)
    if not done:
        return None, state, frozenset(pending)
    dests = {k: dict(v) for k, v in state.dests.items()}
    lines = []
    for key, rkey in sorted(done):
        vs = state.services[key]
        lines.append(f"-d {vs.service_arg} -r {RealServer(rkey[0], rkey[1])}")
        dests[key].pop(rkey, None)
    step = Step("ipvs-reap", ("ipvsadm", "-R"), "\n".join(lines) + "\n")
    return step, replace(state, dests=dests), frozenset(pending)


class IpvsSyncer:
    """Successive syncs of one node: renders a view, diffs it against what the node has."""

    def __init__(self, settings: IpvsSettings = IpvsSettings(), *, iptables_restore: str = "iptables-restore",
                 kernel_release: Optional[str] = None):
        self.renderer = IpvsRenderer(settings)
        self.iptables_restore = iptables_restore
        self.kernel_release = kernel_release
        self.state: Optional[IpvsState] = None      # None: unknown, the next sync needs `observed`
        self.graceful: frozenset[tuple[VSKey, RSKey]] = frozenset()
        self._plan: Optional[SyncPlan] = None

    @property
    def settings(self) -> IpvsSettings:
        return self.renderer.settings

    def set_node_addresses(self, addresses: Iterable[str]) -> None:
        addrs = tuple(addresses)
        if addrs != self.renderer.settings.node_addresses:
            self.renderer.settings = replace(self.renderer.settings, node_addresses=addrs)

    def sync(self, view: NodeProxyView, observed: Optional[IpvsState] = None) -> SyncPlan:
        """The plan for `view`. Without a known state, diff against `observed` (a fresh node if None)."""
        full = self.state is None
        base = self.state if self.state is not None else (observed or IpvsState.empty())
        ruleset = self.renderer.render(view, self.kernel_release)
        self._plan = plan_sync(base, ruleset, graceful=self.graceful, iptables_restore=self.iptables_restore,
                               full=full)
        return self._plan

    def committed(self) -> None:
        """The last plan ran: the node now has its state."""
        if self._plan is not None:
            self.state, self.graceful = self._plan.state, self._plan.graceful
            self._plan = None

    def failed(self) -> None:
        """The last plan failed halfway: forget what the node has (observe it again next time)."""
        self.state, self._plan = None, None

    def reap(self, connections: Mapping[tuple[VSKey, RSKey], int]) -> Optional[Step]:
        if self.state is None or not self.graceful:
            return None
        step, state, pending = reap_plan(self.state, self.graceful, connections)
        self.state, self.graceful = state, pending
        return step
