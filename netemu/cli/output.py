"""Printing: warnings, progress lines on long work, JSON/YAML/name output."""
from __future__ import annotations

import json
import sys
import time

import yaml


def warn(msg: str) -> None:
    print(f"Warning: {msg}", file=sys.stderr)


class Progress:
    """Progress on stderr: a rewritten status line on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.time()
        self._status = False
        self._last = None

    def line(self, msg: str) -> None:
        if self.quiet:
            return
        self._clear()
        print(msg, file=sys.stderr)

    def status(self, msg: str) -> None:
        if self.quiet or msg == self._last:
            return
        self._last = msg
        text = f"[{time.time() - self.t0:5.1f}s] {msg}"
        if self.tty:
            sys.stderr.write("\r\033[K" + text)
            sys.stderr.flush()
            self._status = True
        else:
            print(text, file=sys.stderr)

    def _clear(self) -> None:
        if self._status:
            sys.stderr.write("\r\033[K")
            self._status = False

    def done(self) -> None:
        if self._status:
            sys.stderr.write("\n")
            self._status = False


def _str_presenter(dumper, data):
    # multi-line strings as block scalars, like kubectl
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, _str_presenter)


def to_yaml(obj) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def print_objects(items: list[dict], fmt: str, single: bool) -> None:
    """-o json|yaml|name: one object as itself (single), several as kubectl's List."""
    if fmt in ("json", "yaml"):
        doc = items[0] if single and items else {"apiVersion": "v1", "kind": "List", "items": items,
                                                 "metadata": {"resourceVersion": ""}}
        if fmt == "json":
            print(json.dumps(doc, indent=4))
        else:
            sys.stdout.write(to_yaml(doc))
    elif fmt == "name":
        from netemu.spec import registry

        for o in items:
            res = registry.by_api_version(o.get("apiVersion") or "", o.get("kind") or "") or \
                registry.by_kind(o.get("kind") or "")
            prefix = res.resource_name() if res is not None else (o.get("kind") or "").lower()
            print(f"{prefix}/{o['metadata']['name']}")
