"""Every verb is a fresh interpreter: the CLI must not pay for the spec models (pydantic) or the
dataplane libraries when it only talks to the control process."""
import subprocess
import sys

PROBE = """
import sys
from netemu.cli import main
args = main.build_parser().parse_args(["get", "nodes"])
heavy = sorted(n for n in ("pydantic", "pyroute2", "scapy", "dnslib", "netemu.spec.models") if n in sys.modules)
print(",".join(heavy))
"""


def test_parsing_a_verb_loads_no_heavy_library():
    # dispatch imports every command module; do the same so that their top-level imports count
    probe = PROBE + """
from netemu.cli import (capture_cmds, dns_cmds, exec_cmds, get_cmds, graph_cmds, lab_cmds, ops_cmds, render_cmds,
                        top_cmds, trace_cmds, ingress_cmds)
heavy = sorted(n for n in ("pydantic", "pyroute2", "scapy", "dnslib", "netemu.spec.models") if n in sys.modules)
print(",".join(heavy))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "", f"parsing loaded {out[0]}"
    assert out[1] == "", f"the command modules load {out[1]}"


def test_every_verb_names_a_command_of_its_own_module():
    import importlib

    from netemu.cli import main

    verbs = set(main.build_parser()._subparsers._group_actions[0].choices)
    assert verbs == set(main.VERBS)
    for verb, (module, function, *_extra) in main.VERBS.items():
        assert callable(getattr(importlib.import_module(f"netemu.cli.{module}"), function)), verb


def test_a_verb_imports_its_own_module_only():
    # check-route's command is in main; the parser alone loads the modules that define their verbs' arguments
    probe = """
import sys
from netemu.cli import main
main.dispatch(main.build_parser().parse_args(["check-route", "127.0.0.1"]))
print(",".join(sorted(m for m in sys.modules if m.startswith("netemu.cli.") and m.endswith("_cmds"))))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    parsers_only = {f"netemu.cli.{m}_cmds" for m in ("capture", "graph", "top", "trace")}
    assert set(out.strip().split("\n")[-1].split(",")) == parsers_only
