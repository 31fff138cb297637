"""Kernel object names: no lab name, node name or Kubernetes name can make one lab's object another's."""
from __future__ import annotations

import itertools

from netemu.dataplane import names
from netemu.spec.rules import check_dns_label, check_dns_subdomain


def test_the_issue_cases_do_not_collide():
    # a lab named after another lab's node
    assert names.switch_netns("rel1-w1-k8s") != names.node_netns("rel1", "w1-k8s")
    assert not names.belongs_to("rel1-w1-k8s", names.node_netns("rel1", "w1-k8s"))
    assert not names.belongs_to("rel1", names.switch_netns("rel1-w1-k8s"))
    # a Pod named like a node
    assert names.pod_netns("rel1", "default", "w1-k8s") != names.node_netns("rel1", "w1-k8s")


def test_no_two_objects_of_any_labs_share_a_name():
    labs = ["a", "a-b", "a-b-c", "ab", "b", "rel1", "rel1-w1-k8s", "default"]
    nodes = ["w1-k8s", "m-k8s", "b", "b-c", "default"]
    namespaces = ["default", "kube-system", "b", "w1-k8s"]
    pods = ["w1-k8s", "b", "b-c", "default", "kube-system", "w1-k8s.b", "x.default", "np-pods-5d8f7c9b4-abcde"]
    made: dict[str, tuple] = {}
    for lab in labs:
        objs = [("switch", lab, names.switch_netns(lab))]
        objs += [("node", lab, n, names.node_netns(lab, n)) for n in nodes]
        objs += [("pod", lab, ns, p, names.pod_netns(lab, ns, p)) for ns, p in itertools.product(namespaces, pods)]
        for obj in objs:
            name = obj[-1]
            assert name not in made, (obj, made.get(name))
            made[name] = obj
            # and each belongs to its lab only
            assert [x for x in labs if names.belongs_to(x, name)] == [lab], obj


def test_the_separator_is_in_no_kubernetes_or_lab_name():
    assert check_dns_label("a_b") is not None and check_dns_subdomain("a_b") is not None
    assert names.SEP == "_"


def test_long_pod_names_fit_a_file_name_and_stay_distinct():
    long_a, long_b = "a" * 253, "a" * 252 + "b"
    na = names.pod_netns("a" * 20, "n" * 63, long_a)
    nb = names.pod_netns("a" * 20, "n" * 63, long_b)
    assert len(na) <= names.NETNS_MAX and len(nb) <= names.NETNS_MAX and na != nb
    assert names.belongs_to("a" * 20, na)
    assert na.count("_") == 3  # a hashed pod name: never a full one (two separators)
    assert names.pod_netns("lab", "default", "short") == "ne-lab_default_short"


def test_host_links_fit_and_hashed_ones_are_never_plain_ones():
    assert names.host_link("lab") == "ne-lab"
    assert names.host_link("abcdefghijkl") == "ne-abcdefghijkl"  # 15 characters: as it is
    long = names.host_link("abcdefghijklm")
    assert len(long) == 15 and "_" in long  # hashed: a `_` no lab name (so no plain link name) has


def test_legacy_names_only_match_the_former_scheme():
    assert names.legacy_belongs_to("a", "ne-a-w1-k8s", [])
    assert not names.legacy_belongs_to("a", "ne-a-b-w1", ["a-b"])
    assert not names.legacy_belongs_to("a", "ne-a-b", ["a-b"])
    assert not names.legacy_belongs_to("a", "ne-a_w1", [])  # the current scheme is never legacy
    assert not names.legacy_belongs_to("a", "ne-a-b_w1", [])
