"""Semantic checks of pods' and containers' security contexts, with the API server's rules and words
(ValidateSecurityContext, validatePodSpecSecurityContext, validateSeccompProfileField, ...)."""
from __future__ import annotations

import re
from typing import Optional

from netemu.spec.errors import Location, Report, join_path
from netemu.spec.models import PodSpec, SecurityContext

MAX_ID = 2147483647
PROC_MOUNT_TYPES = ("Default", "Unmasked")
PROFILE_TYPES = ("Localhost", "RuntimeDefault", "Unconfined")
FS_GROUP_CHANGE_POLICIES = ("OnRootMismatch", "Always")
SUPPLEMENTAL_GROUPS_POLICIES = ("Merge", "Strict")
SELINUX_CHANGE_POLICIES = ("MountOption", "Recursive")
_SYSCTL = re.compile(r"^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$")


def _supported(values: tuple[str, ...]) -> str:
    return "supported values: " + ", ".join(f'"{v}"' for v in values)


def _check_id(value: Optional[int], path: str, loc: Location, report: Report) -> None:
    if value is not None and not 0 <= value <= MAX_ID:
        report.error(loc, path, f"must be between 0 and {MAX_ID}, got {value}")


def _check_profile(profile, path: str, what: str, loc: Location, report: Report) -> None:
    if profile is None:
        return
    if profile.type not in PROFILE_TYPES:
        report.error(loc, join_path(path, "type"), _supported(PROFILE_TYPES))
    elif profile.type == "Localhost" and not profile.localhost_profile:
        report.error(loc, join_path(path, "localhostProfile"),
                     f"Required value: must be set when {what} type is Localhost")
    elif profile.type != "Localhost" and profile.localhost_profile is not None:
        report.error(loc, join_path(path, "localhostProfile"), f"can only be set when {what} type is Localhost")


def check_container_security(sc: Optional[SecurityContext], path: str, loc: Location, report: Report) -> None:
    if sc is None:
        return
    _check_id(sc.run_as_user, join_path(path, "runAsUser"), loc, report)
    _check_id(sc.run_as_group, join_path(path, "runAsGroup"), loc, report)
    if sc.proc_mount is not None and sc.proc_mount not in PROC_MOUNT_TYPES:
        report.error(loc, join_path(path, "procMount"), _supported(PROC_MOUNT_TYPES))
    if sc.allow_privilege_escalation is False:
        if sc.privileged:
            report.error(loc, path, "cannot set `allowPrivilegeEscalation` to false and `privileged` to true")
        if "CAP_SYS_ADMIN" in ((sc.capabilities and sc.capabilities.add) or []):
            report.error(loc, path, "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` "
                                    "CAP_SYS_ADMIN")
    _check_profile(sc.seccomp_profile, join_path(path, "seccompProfile"), "seccomp", loc, report)
    _check_profile(sc.app_armor_profile, join_path(path, "appArmorProfile"), "AppArmor", loc, report)


def check_security(spec: PodSpec, path: str, loc: Location, report: Report) -> None:
    """spec.securityContext and every container's securityContext."""
    groups = (("containers", spec.containers or []), ("initContainers", spec.init_containers or []))
    for group, containers in groups:
        for i, c in enumerate(containers):
            check_container_security(c.security_context, join_path(path, f"{group}[{i}].securityContext"), loc,
                                     report)
    psc = spec.security_context
    if psc is None:
        return
    spath = join_path(path, "securityContext")
    _check_id(psc.run_as_user, join_path(spath, "runAsUser"), loc, report)
    _check_id(psc.run_as_group, join_path(spath, "runAsGroup"), loc, report)
    _check_id(psc.fs_group, join_path(spath, "fsGroup"), loc, report)
    for i, g in enumerate(psc.supplemental_groups or []):
        _check_id(g, join_path(spath, f"supplementalGroups[{i}]"), loc, report)
    for field, value, allowed in (("fsGroupChangePolicy", psc.fs_group_change_policy, FS_GROUP_CHANGE_POLICIES),
                                  ("supplementalGroupsPolicy", psc.supplemental_groups_policy,
                                   SUPPLEMENTAL_GROUPS_POLICIES),
                                  ("seLinuxChangePolicy", psc.se_linux_change_policy, SELINUX_CHANGE_POLICIES)):
        if value is not None and value not in allowed:
            report.error(loc, join_path(spath, field), _supported(allowed))
    seen: set[str] = set()
    for i, s in enumerate(psc.sysctls or []):
        spath_i = join_path(spath, f"sysctls[{i}].name")
        if not s.name:
            report.error(loc, spath_i, "Required value")
        elif len(s.name) > 253 or not _SYSCTL.match(s.name.replace("/", ".")):
            report.error(loc, spath_i, f"must have at most 253 characters and match regex {_SYSCTL.pattern}")
        elif s.name in seen:
            report.error(loc, spath_i, f"Duplicate value: {s.name!r}")
        seen.add(s.name)
    _check_profile(psc.seccomp_profile, join_path(spath, "seccompProfile"), "seccomp", loc, report)
    _check_profile(psc.app_armor_profile, join_path(spath, "appArmorProfile"), "AppArmor", loc, report)
