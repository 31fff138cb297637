"""netemu's command line: kubectl-like verbs over a lab's control process."""
from __future__ import annotations

import argparse
import sys

from netemu import __version__
from netemu.cli.errors import CliError

EPILOG = """\
examples:
  sudo netemu up topologies/lab.yaml          build the lab; returns when every pod is Ready
  sudo netemu get pods -o wide                pods with their IPs and nodes
  sudo netemu exec <pod> -- curl -s <ip>      run a command inside a pod
  sudo netemu scale deployment np-pods --replicas=3
  sudo netemu autoscale deployment np-pods --min=1 --max=10 --cpu-percent=50
  sudo netemu top pods                        CPU and memory, measured from the pods' cgroups
  sudo netemu node down w2-k8s                a node failure; `node up` brings it back
  sudo netemu down                            remove the lab, leaving nothing behind

Every verb but `up`, `fmt` and `check-route` talks to a running lab; with one lab up it is the
default, otherwise pick one with --lab NAME. netemu needs root (sudo).
"""


def _common(p: argparse.ArgumentParser, namespaced: bool = True) -> None:
    p.add_argument("--lab", metavar="NAME", help="the lab to talk to (default: the only lab up)")
    if namespaced:
        p.add_argument("-n", "--namespace", metavar="NS", help="Kubernetes namespace (default: default)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="netemu", description="A Kubernetes Service data plane on one Linux machine: "
                                 "real namespaces, veth pairs, iptables rules, ARP and DNS.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"netemu {__version__}")
    ap.add_argument("--lab", dest="global_lab", metavar="NAME",
                    help="the lab to talk to (default: the only lab up); also accepted after the verb")
    sub = ap.add_subparsers(dest="verb", metavar="VERB")

    p = sub.add_parser("up", help="build a lab from a lab file and start its control process",
                       description="Build a lab: nodes and pods as network namespaces, then wait until every "
                       "pod is Running and Ready.", epilog="example: sudo netemu up topologies/lab.yaml",)
    p.add_argument("files", nargs="+", metavar="FILE", help="lab file(s): an optional kind: Lab document and "
                   "Kubernetes manifests (- for stdin)")
    p.add_argument("--name", help="lab name (default: the Lab document's name, else the file name)")
    p.add_argument("--proxy-mode", choices=["iptables", "nftables", "ipvs"], help="override spec.proxyMode")
    p.add_argument("--uplink", metavar="IFACE", help="put a real interface on the lab segment (IFACE, or "
                   "NETNS/IFACE for one inside a named network namespace); `down` gives it back")
    p.add_argument("--force-uplink", action="store_true", help="take the --uplink interface even if it carries "
                   "a default route, routes to other networks or addresses outside the lab network")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for Ready (default 120)")
    p.add_argument("--no-wait", action="store_true", help="return once the network is built")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")

    p = sub.add_parser("down", help="remove a lab and everything it made",
                       description="Stop a lab's pods and control process and remove every namespace, link, "
                       "rule, process, cgroup and file it made. Works after a crash too.")
    p.add_argument("lab_name", nargs="?", metavar="LAB")
    p.add_argument("--lab", help=argparse.SUPPRESS)
    p.add_argument("--all", action="store_true", help="every lab on this machine")

    sub.add_parser("labs", help="list the labs on this machine")

    p = sub.add_parser("kubeconfig", help="print the lab's kubeconfig (kubectl, client libraries)",
                       description="Print a kubeconfig for the lab's Kubernetes API (https://127.0.0.1:<port>, the "
                       "lab's CA, an admin client certificate). `up` merges the same context, netemu-<lab>, into "
                       "the kubeconfig of the user who ran sudo ($KUBECONFIG or ~/.kube/config) and `down` removes "
                       "it.", epilog="example: sudo netemu kubeconfig > lab.kubeconfig && KUBECONFIG=lab.kubeconfig "
                       "kubectl get nodes")
    p.add_argument("--lab", metavar="NAME", help="the lab (default: the only lab up)")

    p = sub.add_parser("get", help="list objects (pods, nodes, deployments, services, endpoints, ...)",
                       epilog="examples:\n  netemu get pods -o wide\n  netemu get svc,endpoints\n"
                       "  netemu get pods -l app=np-pods -o json\n  netemu get all -A",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("resource", help="pods|nodes|deployments|replicasets|services|endpoints|endpointslices|"
                   "ingresses|ingressclasses|namespaces|configmaps|secrets|events|all (short names work: po, no, "
                   "deploy, svc, ep, ing)")
    p.add_argument("name", nargs="?")
    p.add_argument("-o", "--output", help="wide|json|yaml|name")
    p.add_argument("-l", "--selector", help="label selector, e.g. app=web,tier!=db")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-w", "--watch", action="store_true", help="after the table, print each change (Ctrl-C ends)")
    _common(p)

    p = sub.add_parser("describe", help="show an object in detail, with its events")
    p.add_argument("resource")
    p.add_argument("name", nargs="?")
    p.add_argument("-l", "--selector")
    _common(p)

    p = sub.add_parser("apply", help="create or update objects in a running lab from files")
    p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE")
    _common(p)

    p = sub.add_parser("delete", help="delete objects (a deleted pod of a deployment comes back)")
    p.add_argument("resource", nargs="?")
    p.add_argument("names", nargs="*")
    p.add_argument("-f", "--filename", action="append", metavar="FILE")
    p.add_argument("--grace-period", type=int, default=None, metavar="SECONDS")
    _common(p)

    p = sub.add_parser("expose", help="make a Service for a deployment, pod or service",
                       epilog="example: netemu expose deployment np-pods --type=NodePort --name=np-svc2 --port=80")
    p.add_argument("resource", help="deployment|replicaset|pod|service (or kind/NAME)")
    p.add_argument("name", nargs="?")
    p.add_argument("--name", dest="service_name", help="the Service's name (default: the object's)")
    p.add_argument("--type", default="ClusterIP", choices=["ClusterIP", "NodePort", "LoadBalancer"])
    p.add_argument("--port", type=int, help="the Service's port (default: the container ports)")
    p.add_argument("--target-port", help="container port number or name (default: --port)")
    p.add_argument("--protocol", choices=["TCP", "UDP", "SCTP"])
    p.add_argument("--external-ip", help="external IP(s), comma separated")
    p.add_argument("--session-affinity", choices=["None", "ClientIP"])
    p.add_argument("--cluster-ip")
    p.add_argument("--load-balancer-ip")
    p.add_argument("--selector", help="key=value,... (default: the object's selector)")
    _common(p)

    p = sub.add_parser("scale", help="set a deployment's replicas")
    p.add_argument("resource", help="deployment or deployment/NAME")
    p.add_argument("name", nargs="?")
    p.add_argument("--replicas", type=int, required=True)
    _common(p)

    p = sub.add_parser("rollout", help="rollout status deployment/NAME: wait for a rollout to finish")
    p.add_argument("action", choices=["status"])
    p.add_argument("resource")
    p.add_argument("name", nargs="?")
    p.add_argument("--timeout", type=float, default=300)
    _common(p)

    from netemu.cli.top_cmds import add_parsers as add_top_parsers

    add_top_parsers(sub)  # top pods|nodes, autoscale

    p = sub.add_parser("exec", help="run a command in a pod's namespaces: netemu exec POD -- CMD...")
    p.add_argument("pod")
    p.add_argument("-c", "--container", help="the container whose user, capabilities and root the command gets "
                                              "(default: the first)")
    p.add_argument("-i", "--stdin", action="store_true", help="accepted for kubectl compatibility")
    p.add_argument("-t", "--tty", action="store_true", help="accepted for kubectl compatibility")
    p.add_argument("command", nargs="*", help="after --, as in kubectl")
    _common(p)

    p = sub.add_parser("logs", help="print a pod's output")
    p.add_argument("pod")
    p.add_argument("-c", "--container")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail", type=int, default=None)
    _common(p)

    for verb, text in (("cordon", "mark a node unschedulable"), ("uncordon", "mark a node schedulable"),
                       ("drain", "cordon a node and move its pods elsewhere")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("node")
        if verb == "drain":
            p.add_argument("--ignore-daemonsets", action="store_true", help="leave DaemonSet-managed pods")
            p.add_argument("--delete-emptydir-data", action="store_true",
                           help="evict pods with emptyDir volumes too (their data goes)")
            p.add_argument("--force", action="store_true", help="evict pods that no controller will replace too")
            p.add_argument("--grace-period", type=int, default=None, metavar="SECONDS",
                           help="the pods' termination grace period (default: each pod's own)")
            p.add_argument("--no-wait", action="store_true", help="do not wait for the pods to be replaced")
            p.add_argument("--timeout", type=float, default=120)
        _common(p, namespaced=False)

    p = sub.add_parser("node", help="failure injection: node down|up NAME (cut or restore its link)")
    p.add_argument("action", choices=["down", "up"])
    p.add_argument("node")
    _common(p, namespaced=False)

    p = sub.add_parser("render", help="print, without touching the kernel, the rules kube-proxy would write on a node",
                       epilog="example: netemu render iptables -f svc.yaml --node-name w1-k8s --node-ip 192.168.1.101 "
                       "--cluster-cidr 172.16.0.0/16")
    p.add_argument("mode", choices=["iptables", "nftables", "ipvs"])
    p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                   help="Services plus EndpointSlices (or Pods with status.podIP), from any cluster: "
                   "`kubectl get svc,endpointslices -A -o yaml` prints a kind: List that works as it is")
    p.add_argument("--node-name", required=True)
    p.add_argument("--node-ip", action="append", metavar="IP")
    p.add_argument("--cluster-cidr")
    p.add_argument("--localhost-nodeports", action=argparse.BooleanOptionalAction, default=True,
                   help="kube-proxy's --iptables-localhost-nodeports (default true)")
    p.add_argument("--nfacct", action="store_true", help="emit the nfacct counter rules kube-proxy adds")
    p.add_argument("--masquerade-all", action="store_true")
    p.add_argument("--jumps", action="store_true", help="also print the jumps from built-in chains")
    p.add_argument("--service-cidr", action="append", metavar="CIDR", help="nftables: kube-proxy's service CIDRs")
    p.add_argument("--nodeport-addresses", action="append", metavar="CIDRS",
                   help="kube-proxy's --nodeport-addresses: the node addresses that accept NodePorts, CIDRs "
                   "(or primary) comma separated (default: every address; nftables: the primary node IP)")
    p.add_argument("--fake-proxier", action="store_true",
                   help="the settings kube-proxy's unit tests run with (NewFakeProxier: mark 0x4000, no "
                   "--random-fully, nfacct counters), so that its tests' expected outputs come out as they are")
    p.add_argument("--ipvs-scheduler", choices=["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh"],
                   help="ipvs: kube-proxy's --ipvs-scheduler (default: the file's spec.ipvsScheduler, rr)")
    p.add_argument("--fast", action="store_true",
                   help="nftables: the equivalent form netemu loads (no per-service verdict maps)")

    p = sub.add_parser("rules", help="what kube-proxy has loaded on a node now (iptables-save)")
    p.add_argument("node")
    _common(p, namespaced=False)

    p = sub.add_parser("dns", help="ask the cluster DNS from a pod (or a node), like dig",
                       epilog="examples:\n  netemu dns np-svc --from <pod>\n  netemu dns _http._tcp.np-svc SRV\n"
                       "  netemu dns 10.96.0.10.in-addr.arpa PTR",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("type", nargs="?", default="A", help="A, AAAA, SRV, PTR, TXT, SOA, NS, CNAME (default A)")
    p.add_argument("--from", dest="from_pod", metavar="POD", help="ask from this pod (default: from node m-k8s)")
    p.add_argument("--node", help="ask from this node")
    p.add_argument("--server", help="DNS server address (default: the lab's clusterDNS)")
    p.add_argument("--no-search", dest="search", action="store_false", help="do not apply the pod's search list")
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("-v", "--verbose", action="store_true")
    _common(p)

    from netemu.cli import capture_cmds, graph_cmds, trace_cmds

    graph_cmds.add_parser(sub)
    capture_cmds.add_parser(sub)
    trace_cmds.add_parser(sub)

    p = sub.add_parser("bgp", help="BGP sessions of MetalLB's speakers (FRR in each node) and the lab's routers",
                       description="Each node's and router's BGP sessions, from FRR's `show bgp summary json`: "
                       "peer, state, uptime, prefixes received and sent; the host's session too (kind host) "
                       "when a router has upstream: true. FRR's own views: "
                       "netemu exec r1 -- vtysh -c 'show ip bgp'")
    p.add_argument("--node", metavar="NAME", help="one node or router (host: the host's bgpd)")
    p.add_argument("-o", "--output", choices=["json"], help="FRR's summaries as JSON")
    _common(p, namespaced=False)

    p = sub.add_parser("speaker", help="failure injection: speaker kill|start NODE (MetalLB's ARP speaker)")
    p.add_argument("action", choices=["kill", "start"])
    p.add_argument("node")
    _common(p, namespaced=False)

    p = sub.add_parser("fmt", help="print a lab file as netemu understands it (re-indents flattened YAML)")
    p.add_argument("file")

    p = sub.add_parser("check-route", help="exit 0 only if the host routes ADDRESS into a lab (safety check)",
                       epilog="example: netemu check-route 192.168.1.101 && curl 192.168.1.101:30000")
    p.add_argument("address")
    p.add_argument("--lab", help="require this lab's interface")
    return ap


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = build_parser()
    command = None
    verb_at = _verb_index(argv)
    if verb_at < len(argv) and argv[verb_at] == "exec" and "--" in argv[verb_at:]:
        # flags may come anywhere before `--`, as in kubectl
        i = argv.index("--", verb_at)
        argv, command = argv[:i], argv[i + 1:]
    args = ap.parse_args(argv)
    if command is not None:
        args.command = command
    if not args.verb:
        ap.print_help()
        return 2
    try:
        _global_lab(args)
        return dispatch(args) or 0
    except CliError as e:
        text = str(e)  # the API's own words come as kubectl prints them: `Error from server (Reason): ...`
        print(text if text.startswith("Error from server") else f"error: {text}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except (ConnectionError, TimeoutError) as e:  # a lab's control process that went away or hangs
        print(f"error: the lab's control process did not answer ({type(e).__name__}: {e}); "
              "`netemu labs` shows its state, `netemu down LAB` removes it", file=sys.stderr)
        return 1


def _verb_index(argv: list[str]) -> int:
    """Where the verb is: after the global options (`--lab NAME` may come before it)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":
        i += 2 if argv[i] == "--lab" else 1
    return i


def _global_lab(args) -> None:
    """`netemu --lab NAME VERB ...` is `netemu VERB ... --lab NAME`."""
    lab = getattr(args, "global_lab", None)
    if lab is None:
        return
    if not hasattr(args, "lab"):
        raise CliError(f"--lab does not apply to `netemu {args.verb}`"
                       + (" (the lab's name comes from its file, or --name)" if args.verb == "up" else ""))
    if args.lab not in (None, lab):
        raise CliError(f"--lab given twice, with different labs ({lab} and {args.lab})")
    args.lab = lab


# verb -> (module of netemu.cli, function, its arguments after args): only the verb's module is imported,
# so that a verb pays at start-up for its own imports alone
VERBS = {
    "up": ("lab_cmds", "cmd_up"),
    "down": ("lab_cmds", "cmd_down"),
    "labs": ("lab_cmds", "cmd_labs"),
    "kubeconfig": ("kubeconfig_cmds", "cmd_kubeconfig"),
    "get": ("get_cmds", "cmd_get"),
    "describe": ("get_cmds", "cmd_describe"),
    "apply": ("ops_cmds", "cmd_apply"),
    "delete": ("ops_cmds", "cmd_delete"),
    "scale": ("ops_cmds", "cmd_scale"),
    "expose": ("ops_cmds", "cmd_expose"),
    "rollout": ("ops_cmds", "cmd_rollout"),
    "exec": ("exec_cmds", "cmd_exec"),
    "logs": ("exec_cmds", "cmd_logs"),
    "cordon": ("ops_cmds", "cmd_cordon", True),
    "uncordon": ("ops_cmds", "cmd_cordon", False),
    "drain": ("ops_cmds", "cmd_drain"),
    "node": ("ops_cmds", "cmd_node"),
    "speaker": ("ops_cmds", "cmd_speaker"),
    "bgp": ("bgp_cmds", "cmd_bgp"),
    "fmt": ("main", "cmd_fmt"),
    "render": ("render_cmds", "cmd_render"),
    "dns": ("dns_cmds", "cmd_dns"),
    "rules": ("render_cmds", "cmd_rules"),
    "check-route": ("main", "cmd_check_route"),
    "graph": ("graph_cmds", "cmd_graph"),
    "capture": ("capture_cmds", "cmd_capture"),
    "trace": ("trace_cmds", "cmd_trace"),
    "top": ("top_cmds", "cmd_top"),
    "autoscale": ("top_cmds", "cmd_autoscale"),
}
# modules a verb needs besides its own: describers of kinds registered with get_cmds by the modules of those kinds
ALSO_IMPORTED = {"describe": ("ingress_cmds",)}


def dispatch(args) -> int:
    import importlib

    verb = args.verb
    if verb == "exec" and args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if verb == "get" and args.resource.startswith("-"):
        raise CliError("get needs a resource type first, e.g. netemu get pods")
    module, function, *extra = VERBS[verb]
    for also in ALSO_IMPORTED.get(verb, ()):
        importlib.import_module(f"netemu.cli.{also}")
    return getattr(importlib.import_module(f"netemu.cli.{module}"), function)(args, *extra)


def cmd_fmt(args) -> int:
    from netemu.spec.errors import SpecError
    from netemu.spec.load import recovered_yaml

    try:
        sys.stdout.write(recovered_yaml(args.file))
    except SpecError as e:
        raise CliError(str(e)) from None
    return 0


def cmd_check_route(args) -> int:
    from netemu.dataplane.hostnet import route_device, routes_into_lab

    if routes_into_lab(args.address, args.lab):
        print(f"{args.address} routes into a lab via {route_device(args.address)}")
        return 0
    print(f"{args.address} does not route into a lab (via {route_device(args.address) or 'nothing'}): "
          "not sending anything there", file=sys.stderr)
    return 1
