"""Label and field selectors on object dicts, as the API server filters list and watch requests."""
from __future__ import annotations

from typing import Callable, Optional

from netemu.api.errors import bad_request

# fields each kind can be selected by besides metadata.name / metadata.namespace (the API server's
# field label conversion funcs); anything else is refused as a real server refuses it
FIELDS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
            "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"),
    "Event": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
              "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
              "reason", "reportingComponent", "source", "type"),
    "Node": ("spec.unschedulable",),
    "Secret": ("type",),
    "Namespace": ("status.phase",),
    "ReplicaSet": ("status.replicas",),
    "Job": ("status.successful",),
    "Service": ("spec.clusterIP", "spec.type"),
}


def _get(obj: dict, path: str) -> str:
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return "false" if path in ("spec.unschedulable", "spec.hostNetwork") else ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if path == "source" and isinstance(cur, dict):
        return cur.get("component", "")
    return str(cur)


def field_selector(kind: str, text: Optional[str]) -> Callable[[dict], bool]:
    """`spec.nodeName=w1,status.phase!=Running` -> predicate on an object dict."""
    if not text:
        return lambda o: True
    reqs = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        for op in ("!=", "==", "="):
            if op in part:
                key, _, value = part.partition(op)
                break
        else:
            raise bad_request(f'invalid field selector: "{part}": expected key=value or key!=value')
        key = key.strip()
        if key not in ("metadata.name", "metadata.namespace") and key not in FIELDS.get(kind, ()):
            raise bad_request(f'field label not supported: {key}')
        reqs.append((key, op != "!=", value.strip()))
    return lambda o: all((_get(o, k) == v) == eq for k, eq, v in reqs)


def label_selector(text: Optional[str]) -> Callable[[dict], bool]:
    if not text:
        return lambda o: True
    from netemu.control import labels

    try:
        sel = labels.parse(text)
    except Exception as e:
        raise bad_request(f"unable to parse requirement: {e}") from None
    return lambda o: labels.matches(sel, (o.get("metadata") or {}).get("labels"))
