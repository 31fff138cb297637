"""Label selectors, as the API server evaluates them."""
from __future__ import annotations

from typing import Mapping, Optional

from netemu.spec.models import LabelSelector


def matches(selector: Optional[LabelSelector], labels: Optional[Mapping[str, str]]) -> bool:
    """A LabelSelector (matchLabels AND matchExpressions). An empty selector matches everything."""
    labels = labels or {}
    if selector is None:
        return True
    for k, v in (selector.match_labels or {}).items():
        if labels.get(k) != v:
            return False
    for req in selector.match_expressions or []:
        has = req.key in labels
        val = labels.get(req.key)
        values = req.values or []
        if req.operator == "In" and not (has and val in values):
            return False
        if req.operator == "NotIn" and has and val in values:
            return False
        if req.operator == "Exists" and not has:
            return False
        if req.operator == "DoesNotExist" and has:
            return False
    return True


def matches_map(selector: Optional[Mapping[str, str]], labels: Optional[Mapping[str, str]]) -> bool:
    """A Service-style selector (plain map). Kubernetes treats an empty map as 'select nothing'
    for Services; callers decide that case, here an empty map matches everything."""
    labels = labels or {}
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def parse(text: str) -> LabelSelector:
    """`-l app=web,tier!=db,env in (a,b),!legacy,gpu` as kubectl accepts it."""
    match_labels: dict[str, str] = {}
    exprs: list[dict] = []
    for part in _split(text):
        part = part.strip()
        if not part:
            continue
        if " in " in part or " notin " in part:
            op = "In" if " in " in part else "NotIn"
            key, _, rest = part.partition(" in " if op == "In" else " notin ")
            values = [v.strip() for v in rest.strip().strip("()").split(",") if v.strip()]
            exprs.append({"key": key.strip(), "operator": op, "values": values})
        elif "!=" in part:
            key, _, val = part.partition("!=")
            exprs.append({"key": key.strip(), "operator": "NotIn", "values": [val.strip()]})
        elif "==" in part or "=" in part:
            key, _, val = part.partition("==" if "==" in part else "=")
            match_labels[key.strip()] = val.strip()
        elif part.startswith("!"):
            exprs.append({"key": part[1:].strip(), "operator": "DoesNotExist"})
        else:
            exprs.append({"key": part, "operator": "Exists"})
    return LabelSelector.model_validate({"matchLabels": match_labels or None, "matchExpressions": exprs or None})


def _split(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def format_selector(selector: Optional[LabelSelector]) -> str:
    if selector is None:
        return "<none>"
    parts = [f"{k}={v}" for k, v in (selector.match_labels or {}).items()]
    for r in selector.match_expressions or []:
        if r.operator in ("In", "NotIn"):
            parts.append(f"{r.key} {r.operator.lower()} ({','.join(r.values or [])})")
        elif r.operator == "Exists":
            parts.append(r.key)
        else:
            parts.append(f"!{r.key}")
    return ",".join(parts) or "<none>"
