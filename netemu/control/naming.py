"""Generated names, the way Kubernetes' controllers make them."""
from __future__ import annotations

import json
import random

# k8s.io/apimachinery rand.String alphabet: no vowels (no words), no 0/1/3 (no look-alikes)
ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


def safe_encode(text: str) -> str:
    """Map each character onto ALPHANUMS (apimachinery's SafeEncodeString): the decimal hash
    becomes the familiar `5d8f7c9b4` shape."""
    return "".join(ALPHANUMS[ord(ch) % len(ALPHANUMS)] for ch in text)


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def pod_template_hash(template: dict, collision_count: int = 0) -> str:
    """A stable short hash of a pod template (label `pod-template-hash`, part of ReplicaSet and pod
    names). Like the Deployment controller: FNV-32a over the template, then safe-encoded. The
    exact bytes hashed differ from Go's object printer, so values differ from a real cluster's."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    return safe_encode(str(fnv32a(data)))


def random_suffix(rng: random.Random, n: int = 5) -> str:
    return "".join(rng.choice(ALPHANUMS) for _ in range(n))


def generate_name(prefix: str, rng: random.Random, taken) -> str:
    """`prefix` + 5 random characters, retried until it is free (API server GenerateName)."""
    # names are at most 63 characters; Kubernetes trims the prefix to 58
    prefix = prefix[:58]
    while True:
        name = prefix + random_suffix(rng)
        if name not in taken:
            return name


class Taken:
    """The names taken: the store's (asked name by name, not listed) and those handed out meanwhile."""

    def __init__(self, exists):
        self.exists = exists
        self.given: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.given or self.exists(name)

    def add(self, name: str) -> None:
        self.given.add(name)
