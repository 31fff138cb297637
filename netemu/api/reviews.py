"""Review kinds, answered and never stored: who am I (SelfSubjectReview, `kubectl auth whoami`), may I
(SelfSubjectAccessReview, `kubectl auth can-i`: yes, the lab does not enforce RBAC, and says so),
TokenReview, and TokenRequest (`kubectl create token SA`: a token signed by the lab's CA)."""
from __future__ import annotations

import time
from typing import Optional

from netemu.api import errors
from netemu.spec.registry import Resource

REVIEWS = {"SelfSubjectAccessReview", "SelfSubjectRulesReview", "SubjectAccessReview", "SelfSubjectReview",
           "TokenReview"}
NOT_ENFORCED = "netemu does not enforce RBAC: every authenticated request is allowed"


def groups_of(user: str) -> list[str]:
    if user.startswith("system:serviceaccount:"):
        ns = user.split(":")[2]
        return ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"]
    return ["system:masters", "system:authenticated"]


def review(kind: str, body: dict, user: str, pki) -> dict:
    body = dict(body or {})
    body.setdefault("metadata", {})
    if kind == "SelfSubjectReview":
        body["status"] = {"userInfo": {"username": user, "groups": groups_of(user)}}
    elif kind in ("SelfSubjectAccessReview", "SubjectAccessReview"):
        body["status"] = {"allowed": True, "reason": NOT_ENFORCED}
    elif kind == "SelfSubjectRulesReview":
        body["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                          "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": False,
                          "evaluationError": NOT_ENFORCED}
    elif kind == "TokenReview":
        from netemu.api import pki as pki_mod

        who = pki_mod.verify_token(pki, ((body.get("spec") or {}).get("token") or "")) if pki else None
        body["status"] = ({"authenticated": True, "user": {"username": who, "groups": groups_of(who)}}
                          if who else {"authenticated": False, "error": "invalid bearer token"})
    return body


def token_request(pki, namespace: str, sa: str, body: Optional[dict]) -> dict:
    from netemu.api import pki as pki_mod

    if pki is None:
        raise errors.internal("the lab has no CA")
    spec = (body or {}).get("spec") or {}
    seconds = int(spec.get("expirationSeconds") or 3600)
    if seconds < 600:
        raise errors.invalid(_TOKEN_RES, sa, [("spec.expirationSeconds",
                                               f"Invalid value: {seconds}: may not specify a duration less than "
                                               "10 minutes")])
    token = pki_mod.service_account_token(pki, namespace, sa, expires_in=seconds)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))
    return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": sa, "namespace": namespace},
            "spec": {"audiences": spec.get("audiences") or ["https://kubernetes.default.svc.cluster.local"],
                     "expirationSeconds": seconds},
            "status": {"token": token, "expirationTimestamp": expires}}


_TOKEN_RES = Resource("TokenRequest", "authentication.k8s.io", "v1", "tokenrequests")  # for errors.invalid
