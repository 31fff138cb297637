"""The control process's snapshot feeds (daemon/feeds.py): one publisher, what each feed publishes."""
from __future__ import annotations

import pickle
from unittest import mock

from netemu.control.cluster import Cluster
from netemu.daemon.feeds import IngressPublisher, ZonePublisher
from netemu.frames import digest
from netemu.spec.load import load_text

APP = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
"""


def _cluster():
    spec = load_text(APP, "lab.yaml")
    c = Cluster(spec.lab, clock=lambda: 1_700_000_000.0)
    c.bootstrap()
    c.apply(spec.objects)
    return c


def test_zone_feed_publishes_the_cluster_zone_when_its_kinds_change():
    c = _cluster()
    feed = ZonePublisher(c.lab)
    assert feed.update(c.store) and feed.digest == digest(feed.frame[4:])
    zone = pickle.loads(feed.frame[4:])
    assert ("default", "web") in zone.services
    assert not feed.update(c.store)  # nothing it watches changed: not even rebuilt
    w = mock.Mock()  # a subscriber's asyncio.StreamWriter
    w.is_closing.return_value = False
    feed.subscribers[w] = None  # a DNS pod: it reports nothing back
    svc = c.store.get("Service", "default", "web")
    svc.metadata.labels = {"x": "y"}
    c.store.update(svc)
    assert feed.update(c.store) and w.write.call_args_list == [mock.call(feed.frame)]
    assert feed.settled(c.store)
    w.is_closing.return_value = True
    c.store.delete("Service", "default", "web")
    assert feed.update(c.store) and w not in feed.subscribers


def test_each_feed_watches_its_own_kinds():
    c = _cluster()
    zones, ingress = ZonePublisher(c.lab), IngressPublisher()
    zones.update(c.store), ingress.update(c.store)
    sent = (zones.sent, ingress.sent)
    c.apply(load_text("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\n"
                      "stringData: {tls.crt: x, tls.key: y}\n", "more.yaml").objects)
    assert not zones.update(c.store) and ingress.update(c.store)
    assert (zones.sent, ingress.sent) == (sent[0], sent[1] + 1)
