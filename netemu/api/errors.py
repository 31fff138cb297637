"""API errors as kube-apiserver words them: a `Status` object with code, reason, details and causes,
so that kubectl and client libraries print what a real cluster prints."""
from __future__ import annotations

from typing import Optional

from netemu.spec.registry import Resource


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Optional[dict] = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


def _details(res: Optional[Resource], name: str) -> dict:
    d: dict = {"name": name} if name else {}
    if res is not None:
        d["kind"] = res.plural
        if res.group:
            d["group"] = res.group
    return d


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name))


def namespace_not_found(ns: str) -> ApiError:
    return ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists', _details(res, name))


def conflict(res: Resource, name: str, why: str = "the object has been modified; please apply your changes "
                                                  "to the latest version and try again") -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}',
                    _details(res, name))


def invalid(res: Resource, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """causes: (field path, message as 'Invalid value: ...: why' or 'Required value')."""
    kind = f"{res.kind}.{res.group}" if res.group else res.kind
    parts = [f"{f}: {m}" if f else m for f, m in causes]
    text = "[" + ", ".join(parts) + "]" if len(parts) > 1 else "".join(parts)
    d = {"name": name, "group": res.group, "kind": res.kind,
         "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes]}
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {text}', d)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message: str = "the server does not allow this method on the requested resource") -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def forbidden(message: str) -> ApiError:
    return ApiError(403, "Forbidden", message)


def unsupported_media(ctype: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - accepted '
                    f'media types include: application/json, application/yaml (got "{ctype}")')


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}")


def success(res: Optional[Resource], name: str, uid: str = "") -> dict:
    d = _details(res, name)
    if uid:
        d["uid"] = uid
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d}
