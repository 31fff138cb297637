"""kubectl-like output: the server's Tables (meta.k8s.io/v1, computed by netemu.api.tables) printed as
kubectl prints them, and the small helpers `describe` and `top` use for their own text."""
from __future__ import annotations

import time
from typing import Optional

# one implementation of kubectl's formats, the server's (netemu.api.tables imports nothing heavy)
from netemu.api.tables import human_duration, parse_time, service_ports  # noqa: F401


def parse_ts(s: Optional[str]) -> Optional[float]:
    """An RFC 3339 time (fractions of a second and offsets allowed)."""
    return parse_time(s) if isinstance(s, str) else None


def age(obj: dict, now: Optional[float] = None) -> str:
    t = parse_ts(obj.get("metadata", {}).get("creationTimestamp"))
    return "<unknown>" if t is None else human_duration((now or time.time()) - t)


def host_port(host: str, port) -> str:
    """An address and port as kubectl prints them (Go's net.JoinHostPort): an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def render(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to the widest cell plus three spaces, like kubectl's tabwriter."""
    widths = [len(h) for h in headers]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for r in [headers] + rows:
        lines.append("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
    return "\n".join(lines)


# ------------------------------------------------------------------------------- pods
def pod_status(pod: dict) -> str:
    """The STATUS column as kubectl computes it (printPod)."""
    meta, st = pod.get("metadata", {}), pod.get("status", {})
    if meta.get("deletionTimestamp"):
        return "Terminating"
    reason = st.get("reason") or st.get("phase", "Pending")
    for cs in st.get("containerStatuses") or []:
        state = cs.get("state", {})
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated"):
            t = state["terminated"]
            reason = t.get("reason") or (f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode')}")
    if reason == "Pending" and not pod.get("spec", {}).get("nodeName"):
        return "Pending"
    if reason == "Running" and not st.get("containerStatuses"):
        return "ContainerCreating"
    return reason


# ------------------------------------------------------------------------------- helpers
def _selector_text(sel: dict) -> str:
    parts = [f"{k}={v}" for k, v in (sel.get("matchLabels") or {}).items()]
    for e in sel.get("matchExpressions") or []:
        parts.append(f"{e['key']} {e['operator'].lower()} ({','.join(e.get('values') or [])})")
    return ",".join(parts) or "<none>"


# ------------------------------------------------------------------------------- server-side Tables
def cell_text(value) -> str:
    """A Table cell as kubectl prints it: strings up to their first newline, Go's forms of the rest."""
    if value is None:
        return "<none>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        first, nl, _ = value.partition("\n")
        return first + ("..." if nl else "")
    return str(value)


def visible_columns(table: dict, wide: bool) -> list[int]:
    """Indices of the columns kubectl shows: priority 0 ones, and all of them with -o wide."""
    return [i for i, c in enumerate(table.get("columnDefinitions") or []) if wide or not c.get("priority")]


def table_header(table: dict, wide: bool, with_namespace: bool = False) -> list[str]:
    cols = table.get("columnDefinitions") or []
    return (["NAMESPACE"] if with_namespace else []) + [cols[i]["name"].upper() for i in visible_columns(table, wide)]


def row_key(row: dict) -> tuple[str, str]:
    meta = (row.get("object") or {}).get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def table_rows(table: dict, wide: bool, with_namespace: bool = False, kind_prefix: str = "") -> list[list[str]]:
    """The rows as text; with kind_prefix (several kinds in one `get`) names read `deployment.apps/x`."""
    shown = visible_columns(table, wide)
    out = []
    for row in table.get("rows") or []:
        cells = row.get("cells") or []
        text = [cell_text(cells[i]) if i < len(cells) else "" for i in shown]
        if kind_prefix and text and shown and shown[0] == 0:
            text[0] = f"{kind_prefix}/{text[0]}"
        out.append(([row_key(row)[0]] if with_namespace else []) + text)
    return out


def print_table(table: dict, wide: bool = False, with_namespace: bool = False, kind_prefix: str = "") -> str:
    """A Table as `kubectl get` prints it."""
    return render(table_header(table, wide, with_namespace), table_rows(table, wide, with_namespace, kind_prefix))
