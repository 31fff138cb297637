"""Verbs that change a running lab: apply, delete, scale, rollout, cordon, drain, node."""
from __future__ import annotations

import sys

from netemu.cli.client import CliError, Client, pick_lab
from netemu.cli.kinds import CLUSTER_SCOPED, split_ref
from netemu.cli.output import Progress, warn


def _client(args) -> Client:
    return Client(pick_lab(args.lab))


def _load_for_lab(client: Client, files: list[str]):
    from netemu.spec.errors import SpecError
    from netemu.spec.load import load_objects
    from netemu.spec.models import Lab

    lab = Lab.model_validate(client.call("lab"))
    try:
        objs, warnings = load_objects(files, lab)
    except SpecError as e:
        raise CliError(str(e)) from None
    for w in warnings:
        warn(w)
    return objs


def cmd_apply(args) -> int:
    client = _client(args)
    objs = _load_for_lab(client, args.filename)
    for line in client.call("apply", objects=[o.dump() for o in objs]):
        print(line)
    return 0


def cmd_delete(args) -> int:
    client = _client(args)
    targets = []
    if args.filename:
        for o in _load_for_lab(client, args.filename):
            targets.append((o.kind, o.metadata.namespace, o.metadata.name))
    else:
        if not args.resource:
            raise CliError("delete needs a resource and name, or -f FILE")
        if "/" in args.resource:
            refs = [split_ref(r, None) for r in [args.resource, *(args.names or [])]]
        else:
            refs = [split_ref(args.resource, n) for n in args.names or []]
        if not refs:
            raise CliError(f"delete {args.resource}: name the objects to delete")
        targets = [(k, None if k in CLUSTER_SCOPED else (args.namespace or "default"), n) for k, n in refs]
    rc = 0
    for kind, ns, name in targets:
        try:
            print(client.call("delete", kind=kind, namespace=ns, name=name, grace=args.grace_period))
        except CliError as e:
            print(f"Error from server (NotFound): {e}" if "not found" in str(e) else f"error: {e}", file=sys.stderr)
            rc = 1
    return rc


def cmd_scale(args) -> int:
    client = _client(args)
    kind, name = split_ref(args.resource, args.name)
    if not name:
        raise CliError("scale needs a name: netemu scale deployment NAME --replicas=N")
    print(client.call("scale", kind=kind, namespace=args.namespace or "default", name=name, replicas=args.replicas))
    return 0


def cmd_rollout(args) -> int:
    if args.action != "status":
        raise CliError(f"rollout {args.action}: only `rollout status` is supported")
    client = Client(pick_lab(args.lab), timeout=None)
    kind, name = split_ref(args.resource, args.name)
    if kind != "Deployment":
        raise CliError("rollout status works on deployments")
    last = [None]

    def show(msg: str, final: bool) -> None:
        if msg != last[0]:
            print(msg, flush=True)
            last[0] = msg

    client.wait(show, **{"for": "rollout"}, name=name, namespace=args.namespace or "default", timeout=args.timeout)
    return 0


def cmd_cordon(args, value: bool) -> int:
    print(_client(args).call("cordon", name=args.node, value=value))
    return 0


def cmd_drain(args) -> int:
    client = _client(args)
    res = client.call("drain", name=args.node)
    print(f"node/{res['node']} cordoned")
    for p in res["evicted"]:
        print(f"evicting pod {p}")
    if not args.no_wait:
        progress = Progress()
        client = Client(client.lab, timeout=None)
        client.wait(lambda m, f: progress.status(m), timeout=args.timeout)
        progress.done()
    for p in res["evicted"]:
        print(f"pod/{p.split('/', 1)[1]} evicted")
    print(f"node/{res['node']} drained")
    return 0


def cmd_node(args) -> int:
    client = _client(args)
    print(client.call("node", name=args.node, up=args.action == "up"))
    return 0


def cmd_expose(args) -> int:
    client = _client(args)
    kind, name = split_ref(args.resource, args.name)
    print(client.call("expose", kind=kind, namespace=args.namespace or "default", name=name,
                      service_name=args.service_name, type=args.type, port=args.port, target_port=args.target_port,
                      protocol=args.protocol, external_ip=args.external_ip, session_affinity=args.session_affinity,
                      cluster_ip=args.cluster_ip, load_balancer_ip=args.load_balancer_ip, selector=args.selector))
    return 0


def cmd_speaker(args) -> int:
    print(_client(args).call("speaker", name=args.node, alive=args.action == "start"))
    return 0
