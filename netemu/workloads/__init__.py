"""Built-in programs that stand in for container images.

Images cannot be pulled here, so a container runs either its `command` (exec'd as Kubernetes
would, with `args` appended) or a small stand-in that behaves like the image on its ports:

    sysnet4admin/echo-hname   echo-hname   the pod name (hostname), on every path
    sysnet4admin/echo-ip      echo-ip      request_method : GET | ip_dest: <server> | ip_src: <client>
    nginx                     nginx        the welcome page, 404 elsewhere
    nginxdemos/hello[:plain-text]  hello, hello-plain   server address, name, date, URI, request ID
    gcr.io/kuar-demo/kuard-*  kuard        /ready and /healthy that can be made to fail, /env
    redis                     (exec redis-server when installed, else the built-in redis)
    ghcr.io/subicura/counter  counter      a hit counter kept in redis at $REDIS_HOST:$REDIS_PORT
    registry.k8s.io/hpa-example  hpa-example  php-apache of the HPA walkthrough: ~50 ms of CPU per request, "OK!"
    busybox, alpine, ...      sleep        a shell box to exec into
    anything else             generic      the pod name, with a warning

`resolve()` picks the program; `run_builtin()` runs a stand-in in the container process, which
the launcher forks from a process that imported this package: everything here imports only
the standard library, and loads it all up front so that forks share it.
"""
from netemu.workloads.model import PortSpec, Program, WorkloadContext
from netemu.workloads.preload import warm_up
from netemu.workloads.registry import BUILTIN_NAMES, parse_image, resolve
from netemu.workloads.runner import run_builtin

warm_up()

__all__ = ["BUILTIN_NAMES", "PortSpec", "Program", "WorkloadContext", "parse_image", "resolve", "run_builtin"]
