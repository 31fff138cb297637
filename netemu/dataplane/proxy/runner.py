"""The kernel tools kube-proxy's appliers run, behind one small interface that tests fake.

Every proxy mode programs a node with command-line tools run inside the node's network namespace
(iptables-restore and -save, `nft -f`, ipset restore, ipvsadm -R, `ip -batch`, sysctl, conntrack -D).
A Runner runs one of them, with optional standard input, and returns its standard output or raises
RunError. NetnsRunner runs them for real; FakeRunner records every call and answers from canned
outputs, so unit tests check what an applier sends without root (kube-proxy's pkg/util/iptables
Interface and its testing fake are the model).
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, Union

from netemu.dataplane.nsutil import netns_path


class RunError(RuntimeError):
    """A tool exited with an error (the message names the command, the namespace and what it said)."""


class Runner(Protocol):
    def run(self, netns: str, argv: Sequence[str], stdin: Optional[str] = None) -> str:
        """Run argv inside the network namespace netns; its stdout, or RunError."""
        ...


class NetnsRunner:
    """Runs the tools for real (nsenter: one exec, unlike `ip netns exec`)."""

    def __init__(self, timeout: Optional[float] = 120) -> None:
        self.timeout = timeout

    def run(self, netns: str, argv: Sequence[str], stdin: Optional[str] = None) -> str:
        res = subprocess.run(["nsenter", f"--net={netns_path(netns)}", "--", *argv], input=stdin,
                             capture_output=True, text=True, timeout=self.timeout)
        if res.returncode != 0:
            raise RunError(f"{' '.join(argv)} in {netns}: {(res.stderr or res.stdout).strip()}")
        return res.stdout


@dataclass(frozen=True)
class Call:
    netns: str
    argv: tuple[str, ...]
    stdin: Optional[str] = None


Answer = Union[str, Exception]


class FakeRunner:
    """Records each call; answers with the canned output of the longest registered argv prefix
    (an Exception is raised instead), "" when none matches."""

    def __init__(self, answers: Optional[dict[tuple[str, ...], Answer]] = None) -> None:
        self.calls: list[Call] = []
        self.answers: dict[tuple[str, ...], Answer] = dict(answers or {})

    def answer(self, argv: Sequence[str], output: Answer) -> None:
        self.answers[tuple(argv)] = output

    def fail(self, argv: Sequence[str], message: str = "failed") -> None:
        self.answers[tuple(argv)] = RunError(f"{' '.join(argv)}: {message}")

    def run(self, netns: str, argv: Sequence[str], stdin: Optional[str] = None) -> str:
        argv = tuple(argv)
        self.calls.append(Call(netns, argv, stdin))
        for n in range(len(argv), -1, -1):
            out = self.answers.get(argv[:n])
            if out is not None:
                if isinstance(out, Exception):
                    raise out
                return out
        return ""

    def commands(self) -> list[tuple[str, ...]]:
        return [c.argv for c in self.calls]

    def sent(self) -> list[tuple[tuple[str, ...], Optional[str]]]:
        """(argv, stdin) of every call, in order."""
        return [(c.argv, c.stdin) for c in self.calls]
