"""Packets where people want to see them: tcpdump inside a node's or a pod's network namespace,
and what a node's kernel did with a connection (its iptables rules and conntrack entry).

Captures run `tcpdump -w -` under `nsenter --net`; its pcap stream goes straight to the file
descriptor it is given (a file, or stdout for `| wireshark -k -i -`), so tcpdump never opens an
output file itself (no privilege-drop or AppArmor surprises). Its status lines ("listening on ...",
"N packets captured") go to stderr, as with tcpdump.
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from typing import IO, Iterable, Optional

NETNS_DIR = "/run/netns"


class CaptureError(RuntimeError):
    pass


# --------------------------------------------------------------------------- tcpdump
def tcpdump_argv(netns: str, iface: str, bpf: Iterable[str] = (), count: Optional[int] = None,
                 snaplen: Optional[int] = None, extra: Iterable[str] = ()) -> list[str]:
    """tcpdump in `netns`, writing pcap to its stdout, packet by packet (-U)."""
    argv = ["nsenter", f"--net={NETNS_DIR}/{netns}", "--", "tcpdump", "-i", iface, "-U", "-w", "-", "-n"]
    if count is not None:
        argv += ["-c", str(count)]
    if snaplen is not None:
        argv += ["-s", str(snaplen)]
    argv += list(extra)
    bpf = [w for w in bpf if w]
    if bpf:
        argv += bpf
    return argv


def check_tools() -> None:
    missing = [t for t in ("tcpdump", "nsenter") if shutil.which(t) is None]
    if missing:
        raise CaptureError(f"capture needs {' and '.join(missing)} (Debian: apt-get install tcpdump util-linux; "
                           "scripts/setup.sh installs them)")


def capture(netns: str, iface: str, out: IO[bytes] | int, bpf: Iterable[str] = (), count: Optional[int] = None,
            duration: Optional[float] = None, snaplen: Optional[int] = None, stderr: IO | int | None = None,
            on_start=None) -> int:
    """Run tcpdump in `netns` until `count` packets, `duration` seconds, or Ctrl-C; the pcap stream
    goes to `out`. Returns tcpdump's exit status (0 when stopped by the duration or Ctrl-C)."""
    check_tools()
    argv = tcpdump_argv(netns, iface, bpf, count=count, snaplen=snaplen)
    proc = subprocess.Popen(argv, stdout=out, stderr=stderr, start_new_session=False)
    if on_start is not None:
        on_start(proc)
    stopped = False
    try:
        if duration is not None:
            try:
                proc.wait(timeout=duration)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)  # tcpdump flushes its output and prints its counts
                stopped = True
        return _finish(proc, stopped)
    except KeyboardInterrupt:  # the terminal sent SIGINT to tcpdump too
        try:
            proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass
        return _finish(proc, True)


def _finish(proc: subprocess.Popen, stopped: bool) -> int:
    try:
        rc = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    if stopped and rc in (0, -signal.SIGINT, 128 + signal.SIGINT):
        return 0
    if rc == -signal.SIGPIPE:  # the reader (wireshark, head) went away: the capture is over
        return 0
    return rc


# --------------------------------------------------------------------------- a node's kernel state
def run_in(netns: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={NETNS_DIR}/{netns}", "--", *argv], capture_output=True, text=True,
                          timeout=timeout)


def local_addresses(netns: str) -> set[str]:
    """The addresses of a namespace (what iptables' `--dst-type LOCAL` matches)."""
    res = subprocess.run(["ip", "-n", netns, "-j", "addr", "show"], capture_output=True, text=True)
    if res.returncode != 0:
        raise CaptureError(f"ip -n {netns} addr: {res.stderr.strip()}")
    return {a["local"] for link in json.loads(res.stdout or "[]") for a in link.get("addr_info", [])}


@dataclass
class ConntrackEntry:
    proto: str
    state: str
    src: str
    dst: str
    sport: str
    dport: str
    reply_src: str
    reply_dst: str
    reply_sport: str
    reply_dport: str
    flags: tuple[str, ...] = ()
    timeout: str = ""
    raw: str = ""

    @property
    def dnat(self) -> Optional[str]:
        """Where the kernel sent the connection, if its destination was rewritten."""
        if (self.reply_src, self.reply_sport) != (self.dst, self.dport):
            return _hostport(self.reply_src, self.reply_sport)
        return None

    @property
    def snat(self) -> Optional[str]:
        """The source the backend saw, if it was rewritten (masquerade)."""
        if (self.reply_dst, self.reply_dport) != (self.src, self.sport):
            return _hostport(self.reply_dst, self.reply_dport)
        return None


def _hostport(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else (f"{host}:{port}" if port else host)


_KV = re.compile(r"(\w+)=(\S+)")


def parse_conntrack(text: str) -> list[ConntrackEntry]:
    """`conntrack -L` lines (tcp 6 117 TIME_WAIT src=.. dst=.. sport=.. dport=.. src=.. ... [ASSURED] ...)."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 4 or "=" in words[0] or not words[1].isdigit():
            continue
        proto, rest = words[0], words[2:]
        timeout = rest[0] if rest and rest[0].isdigit() else ""
        state = rest[1] if timeout and len(rest) > 1 and "=" not in rest[1] else ""
        pairs = _KV.findall(line)
        orig: dict[str, str] = {}
        reply: dict[str, str] = {}
        for k, v in pairs:
            if k in ("src", "dst", "sport", "dport"):
                (orig if k not in orig else reply).setdefault(k, v)
        if "src" not in orig or "src" not in reply:
            continue
        flags = tuple(w.strip("[]") for w in words if w.startswith("[") and w.endswith("]"))
        out.append(ConntrackEntry(proto, state, orig["src"], orig["dst"], orig.get("sport", ""), orig.get("dport", ""),
                                  reply["src"], reply["dst"], reply.get("sport", ""), reply.get("dport", ""),
                                  flags, timeout, line.strip()))
    return out


def conntrack_entries(netns: str, dst: Optional[str] = None, dport: Optional[int] = None,
                      proto: str = "tcp") -> list[ConntrackEntry]:
    """The namespace's conntrack entries to dst[:dport] (original direction)."""
    if shutil.which("conntrack") is None:
        raise CaptureError("conntrack is not installed (Debian: apt-get install conntrack)")
    argv = ["conntrack", "-L", "-p", proto]
    if dst:
        argv += ["--orig-dst", dst]
    if dport is not None:
        argv += ["--orig-port-dst", str(dport)]
    res = run_in(netns, argv)
    if res.returncode != 0 and "0 flow entries" not in res.stderr:
        raise CaptureError(f"conntrack -L in {netns}: {res.stderr.strip()}")
    return parse_conntrack(res.stdout)


# --------------------------------------------------------------------------- iptables-save as a ruleset
class SavedRuleset:
    """`iptables-save` output, with the one method proxy/iptables/trace.py needs: chain(table, chain) -> rules
    as "-A CHAIN ..." lines, in order."""

    def __init__(self, tables: dict[str, dict[str, list[str]]]):
        self.tables = tables

    @classmethod
    def parse(cls, text: str) -> "SavedRuleset":
        tables: dict[str, dict[str, list[str]]] = {}
        current: Optional[dict[str, list[str]]] = None
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("*"):
                current = tables.setdefault(line[1:], {})
            elif line == "COMMIT":
                current = None
            elif current is not None and line.startswith(":"):
                current.setdefault(line[1:].split()[0], [])
            elif current is not None and line.startswith("-A "):
                current.setdefault(line.split()[1], []).append(line)
        return cls(tables)

    def chain(self, table: str, chain: str) -> tuple[str, ...]:
        return tuple(self.tables.get(table, {}).get(chain, ()))

    def only(self, *tables: str) -> "SavedRuleset":
        return SavedRuleset({t: r for t, r in self.tables.items() if t in tables})


def rule_target(rule: str) -> Optional[str]:
    words = rule.split()
    for i, w in enumerate(words[:-1]):
        if w in ("-j", "-g"):
            return words[i + 1]
    return None


def indent_matches(matches: list[str], roots: Iterable[str] = ()) -> list[tuple[int, str]]:
    """(depth, rule) for a depth-first list of matched rules: a rule is one deeper than the rule
    that jumped to its chain."""
    depth: dict[str, int] = {r: 0 for r in roots}
    out = []
    for rule in matches:
        words = rule.split()
        chain = words[1] if len(words) > 1 else ""
        d = depth.get(chain, 0)
        out.append((d, rule))
        target = rule_target(rule)
        if target and target.startswith("KUBE-"):
            depth[target] = d + 1
    return out
