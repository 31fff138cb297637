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
