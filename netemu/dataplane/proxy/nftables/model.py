"""A small model of nf_tables state that applies `nft -f` transactions (a test and debugging aid).

It understands the commands kube-proxy's nftables mode writes (add/create/flush/delete of
tables, chains, rules, sets, maps and elements), applies a transaction atomically and refuses what
the kernel refuses: objects that do not exist, chains or sets still referenced, a map element
whose key exists with another value, a base chain redefined with another hook. dump() prints the
state as knftables' Fake.Dump() does, normalize() orders it as kube-proxy's tests compare it
(sortNFTablesTransaction in pkg/proxy/nftables/helpers_test.go): blank lines and comments
dropped; tables, chains, rules, sets, maps, elements; by object name; rules of a chain in their
order, other lines of one object sorted.
"""
from __future__ import annotations

import copy
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

_CMD = re.compile(r"^(add|create|flush|delete|destroy) (table|chain|rule|set|map|element) (ip6|ip|inet) (\S+)(?: (.*))?$")
_CHAIN_REF = re.compile(r"\b(?:jump|goto) (\S+)")
_SET_REF = re.compile(r"@([^\s}]+)")


class NftModelError(Exception):
    def __init__(self, line_no: int, line: str, reason: str):
        super().__init__(f"line {line_no}: {reason}: {line}")
        self.line_no, self.line, self.reason = line_no, line, reason


@dataclass
class Chain:
    name: str
    type: Optional[str] = None
    hook: Optional[str] = None
    priority: Optional[int] = None
    comment: Optional[str] = None
    rules: list[str] = field(default_factory=list)

    def decl(self, family: str, table: str) -> str:
        out = f"add chain {family} {table} {self.name}"
        parts = []
        if self.type is not None:
            parts.append(f"type {self.type} hook {self.hook} priority {self.priority} ;")
        if self.comment is not None:
            parts.append(f'comment "{self.comment}" ;')
        return out + (" { " + " ".join(parts) + " }" if parts else "")


@dataclass
class NSet:
    name: str
    is_map: bool
    type: str
    flags: tuple[str, ...] = ()
    timeout: Optional[int] = None
    comment: Optional[str] = None
    elements: dict[str, tuple[Optional[str], Optional[str]]] = field(default_factory=dict)  # key -> (value, comment)

    def decl(self, family: str, table: str) -> str:
        parts = [f"{self.type} ;"]
        if self.flags:
            parts.append(f"flags {','.join(self.flags)} ;")
        if self.timeout is not None:
            parts.append(f"timeout {self.timeout}s ;")
        if self.comment is not None:
            parts.append(f'comment "{self.comment}" ;')
        return f"add {'map' if self.is_map else 'set'} {family} {table} {self.name} {{ {' '.join(parts)} }}"

    def element_line(self, family: str, table: str, key: str) -> str:
        value, comment = self.elements[key]
        out = key + (f' comment "{comment}"' if comment is not None else "") + (f" : {value}" if value is not None else "")
        return f"add element {family} {table} {self.name} {{ {out} }}"


@dataclass
class Table:
    family: str
    name: str
    comment: Optional[str] = None
    chains: dict[str, Chain] = field(default_factory=dict)
    sets: dict[str, NSet] = field(default_factory=dict)     # sets and maps share a namespace
    chain_refs: Counter = field(default_factory=Counter)    # chain -> jumps/gotos to it (rules, elements)
    set_refs: Counter = field(default_factory=Counter)      # set -> rules using it


def _split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes."""
    out, cur, quoted, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            quoted = not quoted
        if not quoted and text.startswith(sep, i):
            out.append("".join(cur))
            cur = []
            i += len(sep)
            continue
        cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def _braced(rest: str) -> tuple[str, Optional[str]]:
    """"NAME { body }" -> (NAME, body)."""
    name, _, body = rest.partition(" ")
    body = body.strip()
    if not body:
        return name, None
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError("expected { ... }")
    return name, body[1:-1].strip()


def _props(body: str) -> dict[str, str]:
    out = {}
    for part in _split_top(body, ";"):
        part = part.strip()
        if not part:
            continue
        k, _, v = part.partition(" ")
        out[k] = v.strip()
    return out


def _unquote(s: str) -> str:
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s


def _parse_element(text: str) -> tuple[str, Optional[str], Optional[str]]:
    text = text.strip()
    parts = _split_top(text, " : ")
    head = parts[0]
    value = parts[1].strip() if len(parts) > 1 else None
    comment = None
    m = re.search(r' comment ("[^"]*")$', head)
    if m:
        comment = _unquote(m.group(1))
        head = head[:m.start()]
    return head.strip(), value, comment


class NftModel:
    """Tables keyed by (family, name)."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], Table] = {}
        self.transactions = 0
        self.last_operations = 0

    # ---------------------------------------------------------------- applying
    def apply(self, text: str) -> int:
        """Apply one transaction (all or nothing); returns its number of operations."""
        work = copy.deepcopy(self.tables)
        ops = 0
        for no, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                ops += self._one(work, line)
            except NftModelError:
                raise
            except (ValueError, KeyError) as e:
                raise NftModelError(no, line, str(e)) from None
            except _Refused as e:
                raise NftModelError(no, line, e.args[0]) from None
        self.tables = work
        self.transactions += 1
        self.last_operations = ops
        return ops

    def _one(self, tables: dict, line: str) -> int:
        m = _CMD.match(line)
        if not m:
            raise _Refused("syntax error")
        verb, kind, family, table, rest = m.groups()
        rest = rest or ""
        key = (family, table)
        if kind == "table":
            if verb in ("add", "create"):
                if key in tables:
                    if verb == "create":
                        raise _Refused("File exists")
                else:
                    tables[key] = Table(family, table)
                body = rest.strip()
                if body.startswith("{"):
                    props = _props(body[1:-1])
                    if "comment" in props:
                        tables[key].comment = _unquote(props["comment"])
            elif verb == "flush":
                t = self._table(tables, key)
                for c in t.chains.values():
                    c.rules.clear()
                for s in t.sets.values():
                    s.elements.clear()
                t.chain_refs.clear()
                t.set_refs.clear()
            else:
                if key not in tables:
                    if verb == "destroy":
                        return 1
                    raise _Refused("No such file or directory")
                del tables[key]
            return 1
        t = self._table(tables, key)
        if kind == "chain":
            return self._chain(t, verb, rest)
        if kind == "rule":
            return self._rule(t, verb, rest)
        if kind in ("set", "map"):
            return self._set(t, verb, kind == "map", rest)
        return self._element(t, verb, rest)

    @staticmethod
    def _table(tables: dict, key) -> Table:
        if key not in tables:
            raise _Refused("No such file or directory (table)")
        return tables[key]

    def _chain(self, t: Table, verb: str, rest: str) -> int:
        name, body = _braced(rest)
        if verb in ("add", "create"):
            new = Chain(name)
            if body is not None:
                props = _props(body)
                if "type" in props:
                    m = re.match(r"(\S+) hook (\S+)(?: device \S+)? priority (\S+)", props["type"])
                    if not m:
                        raise _Refused("bad chain type")
                    new.type, new.hook, new.priority = m.group(1), m.group(2), int(m.group(3))
                if "comment" in props:
                    new.comment = _unquote(props["comment"])
            old = t.chains.get(name)
            if old is None:
                t.chains[name] = new
            else:
                if verb == "create":
                    raise _Refused("File exists")
                if new.type is not None and (old.type, old.hook, old.priority) != (new.type, new.hook, new.priority):
                    raise _Refused("Operation not supported (chain redefined)")
                if new.comment is not None:
                    old.comment = new.comment
            return 1
        if name not in t.chains:
            if verb == "destroy":
                return 1
            raise _Refused("No such file or directory (chain)")
        chain = t.chains[name]
        if verb == "flush":
            for r in chain.rules:
                self._unref(t, r)
            chain.rules.clear()
            return 1
        # delete: the chain's rules go with it, but nothing may still jump to it
        for r in chain.rules:
            self._unref(t, r)
        chain.rules.clear()
        if t.chain_refs[name] > 0:
            raise _Refused("Device or resource busy (chain in use)")
        del t.chains[name]
        return 1

    def _rule(self, t: Table, verb: str, rest: str) -> int:
        if verb != "add":
            raise _Refused(f"{verb} rule is not modelled")
        chain, _, text = rest.partition(" ")
        if chain not in t.chains:
            raise _Refused("No such file or directory (rule's chain)")
        for target in _CHAIN_REF.findall(text):
            if target not in t.chains:
                raise _Refused(f"No such file or directory (chain {target})")
        for s in _SET_REF.findall(text):
            if s not in t.sets:
                raise _Refused(f"No such file or directory (set {s})")
        t.chains[chain].rules.append(text)
        self._ref(t, text)
        return 1

    @staticmethod
    def _ref(t: Table, rule: str) -> None:
        for target in _CHAIN_REF.findall(rule):
            t.chain_refs[target] += 1
        for s in _SET_REF.findall(rule):
            t.set_refs[s] += 1

    @staticmethod
    def _unref(t: Table, rule: str) -> None:
        for target in _CHAIN_REF.findall(rule):
            t.chain_refs[target] -= 1
        for s in _SET_REF.findall(rule):
            t.set_refs[s] -= 1

    def _set(self, t: Table, verb: str, is_map: bool, rest: str) -> int:
        name, body = _braced(rest)
        if verb in ("add", "create"):
            if body is None:
                raise _Refused("set without definition")
            props = _props(body)
            if "type" in props:
                typ = "type " + props["type"]
            elif "typeof" in props:
                typ = "typeof " + props["typeof"]
            else:
                raise _Refused("set without type")
            flags = tuple(props["flags"].split(",")) if "flags" in props else ()
            timeout = int(props["timeout"].rstrip("s")) if "timeout" in props else None
            comment = _unquote(props["comment"]) if "comment" in props else None
            old = t.sets.get(name)
            if old is None:
                t.sets[name] = NSet(name, is_map, typ, flags, timeout, comment)
            else:
                if verb == "create":
                    raise _Refused("File exists")
                if old.is_map != is_map or old.type != typ or set(old.flags) != set(flags):
                    raise _Refused("File exists (set redefined)")
            return 1
        s = t.sets.get(name)
        if s is None or s.is_map != is_map:
            if verb == "destroy":
                return 1
            raise _Refused("No such file or directory (set)")
        if verb == "flush":
            for value, _ in s.elements.values():
                if value:
                    for target in _CHAIN_REF.findall(value):
                        t.chain_refs[target] -= 1
            s.elements.clear()
            return 1
        if t.set_refs[name] > 0:
            raise _Refused("Device or resource busy (set in use)")
        for value, _ in s.elements.values():
            if value:
                for target in _CHAIN_REF.findall(value):
                    t.chain_refs[target] -= 1
        del t.sets[name]
        return 1

    def _element(self, t: Table, verb: str, rest: str) -> int:
        name, body = _braced(rest)
        s = t.sets.get(name)
        if s is None:
            raise _Refused("No such file or directory (element's set)")
        ops = 0
        for text in _split_top(body or "", " , "):
            if not text.strip():
                continue
            key, value, comment = _parse_element(text)
            ops += 1
            if verb in ("add", "create"):
                if s.is_map and value is None:
                    raise _Refused("map element without value")
                if not s.is_map and value is not None:
                    raise _Refused("set element with value")
                if key in s.elements:
                    if verb == "create" or s.elements[key][0] != value:
                        raise _Refused("File exists (element)")
                    continue
                if value:
                    for target in _CHAIN_REF.findall(value):
                        if target not in t.chains:
                            raise _Refused(f"No such file or directory (chain {target})")
                        t.chain_refs[target] += 1
                s.elements[key] = (value, comment)
            else:
                if key not in s.elements:
                    if verb == "destroy":
                        continue
                    raise _Refused("No such file or directory (element)")
                value = s.elements.pop(key)[0]
                if value:
                    for target in _CHAIN_REF.findall(value):
                        t.chain_refs[target] -= 1
        return ops

    # ---------------------------------------------------------------- reading
    def table(self, family: str = "ip", name: str = "kube-proxy") -> Optional[Table]:
        return self.tables.get((family, name))

    def only_table(self) -> Table:
        assert len(self.tables) == 1, f"{len(self.tables)} tables"
        return next(iter(self.tables.values()))

    def dump(self) -> str:
        """The state as knftables' Fake.Dump(): per table the table, chains, sets and maps (sorted
        by name), then the rules of each chain, then the elements of each set and map."""
        out: list[str] = []
        for (family, name) in sorted(self.tables):
            t = self.tables[(family, name)]
            out.append(f"add table {family} {name}" + (f' {{ comment "{t.comment}" ; }}' if t.comment else ""))
            chains = sorted(t.chains)
            sets = sorted(n for n, s in t.sets.items() if not s.is_map)
            maps = sorted(n for n, s in t.sets.items() if s.is_map)
            out.extend(t.chains[c].decl(family, name) for c in chains)
            out.extend(t.sets[s].decl(family, name) for s in sets)
            out.extend(t.sets[s].decl(family, name) for s in maps)
            for c in chains:
                out.extend(f"add rule {family} {name} {c} {r}" for r in t.chains[c].rules)
            for s in sets + maps:
                ns = t.sets[s]
                out.extend(ns.element_line(family, name, k) for k in sorted(ns.elements))
        return "\n".join(out) + "\n" if out else ""


class _Refused(Exception):
    pass


_ORDER = {"table": 10, "chain": 9, "rule": 8, "set": 7, "map": 6, "element": 5}


def normalize(text: str) -> str:
    """kube-proxy's sortNFTablesTransaction: drop blank and comment lines, then a stable sort by
    object type (table, chain, rule, set, map, element) and object name; rules keep their order,
    other lines of the same object are sorted."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]

    def key(line: str):
        w = line.split(" ")
        if len(w) < 5:
            return (0, "", "")
        return (-_ORDER.get(w[1], 0), w[4], "" if w[1] == "rule" else line)

    return "\n".join(sorted(lines, key=key))
