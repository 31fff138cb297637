"""Pods as containers, the parts that need no lab: securityContext validation (the API server's rules),
what a securityContext resolves to (user, groups, capabilities as containerd applies them), the exec
helper's options, and which of the host's mounts a pod's root is made of."""
from __future__ import annotations

import pytest
import yaml

from netemu.dataplane import podexec, rootfs, security
from netemu.spec.errors import SpecError
from netemu.spec.load import load_text
from netemu.spec.models import Pod


def pod(spec_sc=None, **container_sc) -> Pod:
    doc = {"metadata": {"name": "p", "namespace": "default", "uid": "u1"},
           "spec": {"containers": [{"name": "c", "image": "busybox",
                                    **({"securityContext": container_sc} if container_sc else {})}]}}
    if spec_sc is not None:
        doc["spec"]["securityContext"] = spec_sc
    return Pod.model_validate(doc)


def sec(p: Pod, builtin: bool = False) -> dict:
    return security.container_security(p, p.spec.containers[0], builtin=builtin)


# --------------------------------------------------------------------------- capabilities
def test_the_default_set_is_dockers():
    assert security.capabilities(pod().spec.containers[0]) == sorted(
        podexec.DEFAULT_CAPS, key=lambda n: podexec.CAP_NUMBERS[n])
    assert podexec.cap_mask(podexec.DEFAULT_CAPS) == 0xA80425FB
    assert "SYS_ADMIN" not in podexec.DEFAULT_CAPS


@pytest.mark.parametrize("caps, want", [
    ({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}, ["NET_BIND_SERVICE"]),
    ({"drop": ["NET_RAW", "CAP_CHOWN"]}, sorted(set(podexec.DEFAULT_CAPS) - {"NET_RAW", "CHOWN"},
                                                key=lambda n: podexec.CAP_NUMBERS[n])),
    ({"add": ["NET_ADMIN", "cap_sys_time"]}, sorted(set(podexec.DEFAULT_CAPS) | {"NET_ADMIN", "SYS_TIME"},
                                                     key=lambda n: podexec.CAP_NUMBERS[n])),
    ({"drop": ["ALL"]}, []),
])
def test_capabilities_add_and_drop_as_containerd(caps, want):
    assert sec(pod(capabilities=caps))["caps"] == want


def test_add_all_then_drop_one():
    caps = sec(pod(capabilities={"add": ["ALL"], "drop": ["CHOWN"]}))["caps"]
    assert "CHOWN" not in caps and "SYS_ADMIN" in caps


def test_an_unknown_capability_is_a_container_config_error():
    assert "unknown capability" in sec(pod(capabilities={"add": ["FLY"]}))["error"]


def test_privileged_keeps_everything_and_makes_the_sandbox_privileged():
    p = pod(privileged=True)
    assert sec(p)["caps"] == ["ALL"] and sec(p)["privileged"]
    assert security.pod_privileged(p) and not security.pod_privileged(pod())


# --------------------------------------------------------------------------- users and groups
def test_users_and_groups_pod_then_container():
    p = pod({"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [4000]})
    s = sec(p)
    assert (s["uid"], s["gid"]) == (1000, 3000) and {2000, 4000} <= set(s["groups"])
    s = sec(pod({"runAsUser": 1000}, runAsUser=1001, runAsGroup=7))
    assert (s["uid"], s["gid"]) == (1001, 7)
    assert (sec(pod())["uid"], sec(pod())["gid"]) == (0, 0)


def test_run_as_non_root():
    assert sec(pod({"runAsNonRoot": True}))["uid"] == security.NOBODY  # an image "built to run as non-root"
    err = sec(pod({"runAsNonRoot": True}, runAsUser=0))["error"]
    assert err == 'container\'s runAsUser breaks non-root policy (pod: "p_default(u1)", container: c)'
    assert "error" not in sec(pod({"runAsNonRoot": True}, runAsUser=5))


def test_no_new_privs_read_only_root_and_ambient_capabilities_for_stand_ins():
    s = sec(pod(allowPrivilegeEscalation=False, readOnlyRootFilesystem=True))
    assert s["nnp"] and s["read_only_root"]
    assert not sec(pod())["nnp"]  # allowPrivilegeEscalation defaults to true
    added = {"runAsUser": 101, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}
    assert sec(pod(**added), builtin=True)["ambient"] == ["NET_BIND_SERVICE"]  # as the image's file capabilities
    assert sec(pod(**added), builtin=False)["ambient"] == []  # a command: none survive its exec, as in Kubernetes


def test_exec_options_carry_the_containers_settings():
    s = sec(pod({"runAsUser": 1000, "fsGroup": 2000}, allowPrivilegeEscalation=False))
    opts = security.exec_options(s, 1234, "/run/netns/x")
    assert opts[:2] == ["--net=/run/netns/x", "--target=1234"]
    assert "--uid=1000" in opts and "--nnp" in opts and any(o.startswith("--groups=") and "2000" in o for o in opts)
    parsed, argv = podexec._parse(opts + ["--", "id", "-u"])
    assert parsed["uid"] == 1000 and parsed["target"] == 1234 and parsed["nnp"] and argv == ["id", "-u"]
    assert podexec.cap_mask(parsed["caps"].split(",")) == podexec.cap_mask(podexec.DEFAULT_CAPS)


# --------------------------------------------------------------------------- validation
def _errors(pod_doc: dict) -> list[str]:
    with pytest.raises(SpecError) as e:
        load_text(yaml.safe_dump(pod_doc), "t.yaml")
    return e.value.errors


def _pod_doc(spec_sc=None, **container_sc) -> dict:
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": container_sc}]}}
    if spec_sc is not None:
        doc["spec"]["securityContext"] = spec_sc
    return doc


@pytest.mark.parametrize("spec_sc, container_sc, field, words", [
    ({"runAsUser": -1}, {}, "spec.securityContext.runAsUser", ("between 0 and 2147483647",)),
    ({"fsGroup": 2147483648}, {}, "spec.securityContext.fsGroup", ("between 0 and 2147483647",)),
    ({"supplementalGroups": [1, -2]}, {}, "spec.securityContext.supplementalGroups[1]", ("between 0",)),
    ({"fsGroupChangePolicy": "Sometimes"}, {}, "spec.securityContext.fsGroupChangePolicy", ('"OnRootMismatch"',)),
    ({"sysctls": [{"name": "Bad Name", "value": "1"}]}, {}, "spec.securityContext.sysctls[0].name",
     ("must have at most 253 characters",)),
    (None, {"runAsGroup": -5}, "spec.containers[0].securityContext.runAsGroup", ("between 0 and 2147483647",)),
    (None, {"procMount": "Weird"}, "spec.containers[0].securityContext.procMount", ('"Default", "Unmasked"',)),
    (None, {"privileged": True, "allowPrivilegeEscalation": False}, "spec.containers[0].securityContext",
     ("cannot set `allowPrivilegeEscalation` to false and `privileged` to true",)),
    (None, {"allowPrivilegeEscalation": False, "capabilities": {"add": ["CAP_SYS_ADMIN"]}},
     "spec.containers[0].securityContext", ("`capabilities.Add` CAP_SYS_ADMIN",)),
    (None, {"seccompProfile": {"type": "Localhost"}}, "spec.containers[0].securityContext.seccompProfile"
     ".localhostProfile", ("must be set when seccomp type is Localhost",)),
])
def test_security_contexts_are_validated_as_the_api_server_does(spec_sc, container_sc, field, words):
    errors = _errors(_pod_doc(spec_sc, **container_sc))
    hits = [e for e in errors if f": {field}: " in e]
    assert hits and all(w in hits[0] for w in words), errors


def test_a_valid_security_context_loads():
    objs = load_text(yaml.safe_dump(_pod_doc({"runAsUser": 1000, "fsGroup": 2000, "seccompProfile":
                                              {"type": "RuntimeDefault"}},
                                             readOnlyRootFilesystem=True, capabilities={"drop": ["ALL"]})), "t.yaml")
    p = next(o for o in objs.objects if o.kind == "Pod")
    assert p.spec.security_context.run_as_user == 1000
    assert p.spec.containers[0].security_context.read_only_root_filesystem is True
    assert not objs.warnings  # every field is known


# --------------------------------------------------------------------------- the pod's root
def test_the_layers_are_the_hosts_data_mounts(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text("\n".join([
        "22 27 0:21 / /proc rw,relatime - proc proc rw",
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
        "30 27 0:30 / /home rw,relatime - ext4 /dev/vdb rw",
        "31 27 0:31 / /run rw - tmpfs tmpfs rw",
        "32 31 0:32 / /run/user/0 rw - tmpfs tmpfs rw",
        "33 27 0:33 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw",
        "34 27 0:34 / /tmp rw - tmpfs tmpfs rw",
        "35 27 0:35 / /dev/shm rw - tmpfs tmpfs rw",
        "36 27 0:36 / /with\\040space rw - ext4 /dev/vdc rw",
    ]) + "\n")
    points = [mp for mp, _ in rootfs.host_layers(str(info))]
    assert points[0] == "/" and "/tmp" in points
    assert not {"/proc", "/run", "/run/user/0", "/sys/fs/cgroup", "/dev/shm"} & set(points)
    assert rootfs._unescape("/with\\040space") == "/with space"
