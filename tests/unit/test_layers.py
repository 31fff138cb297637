"""The layers import downward only (issue 17): spec <- control <- api, dataplane <- daemon <- cli, with
the shared top-level modules below everything and the pure side packages (dns, ingress, workloads)
beside. Read from the source (every import statement, those inside functions too), not by importing."""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "netemu"

# the shared modules: no layer of their own, they import only each other
BASE = {"netemu", "paths", "wellknown", "frames", "procutil", "images", "locks", "__init__"}
RANK = {"spec": 1, "control": 2, "api": 3, "dataplane": 3, "daemon": 4, "cli": 5, "__main__": 6}
# pure programs and formats beside the layers: they read objects (spec) and each other; control,
# api, dataplane, daemon and cli may use them, except that the cluster's brain does not depend on
# what runs inside pods (workloads)
SIDE = {"dns", "ingress", "workloads"}
NOT_FROM = {("control", "workloads"), ("api", "workloads")}
TOOLS = {"vmtest"}  # test machinery: it drives everything


def _area(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "netemu":
        return None
    return parts[1] if len(parts) > 1 else "netemu"


def _imports() -> list[tuple[str, str, str]]:
    """(importing area, imported area, file:line) for every netemu import in the package."""
    out = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent)
        src = _area(".".join(rel.with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "netemu":
                    targets = [f"netemu.{a.name}" for a in node.names]
                else:
                    targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                dst = _area(t)
                if dst is not None and dst != src:
                    out.append((src, dst, f"{rel}:{node.lineno}"))
    return out


def allowed(src: str, dst: str) -> bool:
    if src in TOOLS or dst == "__version__":
        return True
    if src in BASE:
        return dst in BASE
    if dst in BASE:
        return True
    if src in SIDE:
        return dst == "spec" or dst in SIDE
    if dst in SIDE:
        return (src, dst) not in NOT_FROM
    if src not in RANK or dst not in RANK:
        return False
    return RANK[dst] < RANK[src]


def test_every_import_goes_downward():
    wrong = sorted(f"{where}: {src} imports {dst}" for src, dst, where in _imports() if not allowed(src, dst))
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_every_area_of_the_package_has_a_place():
    areas = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert areas <= BASE | set(RANK) | SIDE | TOOLS, areas - (BASE | set(RANK) | SIDE | TOOLS)


@pytest.mark.parametrize("src, dst, ok", [
    ("cli", "daemon", True), ("daemon", "cli", False), ("control", "dataplane", False),
    ("dataplane", "control", True), ("spec", "api", False), ("api", "control", True),
    ("api", "dataplane", False), ("workloads", "control", False), ("control", "workloads", False),
    ("dataplane", "workloads", True), ("ingress", "spec", True), ("paths", "spec", False),
])
def test_the_rule_itself(src, dst, ok):
    assert allowed(src, dst) is ok
