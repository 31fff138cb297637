"""Can this kernel run kube-proxy's IPVS mode? It needs ip_vs (virtual servers), ip_set and dummy
links (kube-ipvs0). ipvs_available() / unavailable_message() tell `netemu up` at once when it cannot;
this machine's kernel has no ip_vs, so IPVS mode is tested in a throwaway VM (netemu.vmtest).
"""
from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Optional

WORKING_MODES_WITHOUT_IPVS = ("iptables", "nftables")


def _genl_family_exists(name: str) -> Optional[bool]:
    """Ask generic netlink for a family (CTRL_CMD_GETFAMILY). A modular kernel autoloads the module
    that provides it (ip_vs has MODULE_ALIAS_GENL_FAMILY("IPVS")). None: could not ask."""
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)  # NETLINK_GENERIC
    except OSError:
        return None
    try:
        s.settimeout(2)
        s.bind((0, 0))
        raw = name.encode() + b"\0"
        attr = struct.pack("=HH", 4 + len(raw), 2) + raw       # CTRL_ATTR_FAMILY_NAME
        attr += b"\0" * (-len(attr) % 4)
        genl = struct.pack("=BBH", 3, 1, 0)                    # CTRL_CMD_GETFAMILY, version 1
        body = genl + attr
        s.send(struct.pack("=IHHII", 16 + len(body), 0x10, 1, 1, 0) + body)  # GENL_ID_CTRL, NLM_F_REQUEST
        data = s.recv(65536)
        if len(data) < 16:
            return None
        _, mtype, _, _, _ = struct.unpack("=IHHII", data[:16])
        if mtype == 2:  # NLMSG_ERROR
            (err,) = struct.unpack("=i", data[16:20])
            if err == 0:
                return True
            return False if -err == errno.ENOENT else None
        return mtype == 0x10
    except OSError:
        return None
    finally:
        s.close()


def _module_known(name: str) -> bool:
    """Loaded, built in, or loadable (in modules.dep) on the running kernel."""
    if os.path.isdir(f"/sys/module/{name}"):
        return True
    base = f"/lib/modules/{os.uname().release}"
    for fname in ("modules.builtin", "modules.dep"):
        try:
            with open(os.path.join(base, fname)) as f:
                if any(line.split(":", 1)[0].endswith(f"/{name}.ko") or f"/{name}.ko." in line.split(":", 1)[0]
                       for line in f):
                    return True
        except OSError:
            continue
    return False


def ipvs_available() -> bool:
    """Can this kernel run IPVS virtual servers? (/proc/net/ip_vs, or the IPVS generic-netlink
    family, which loads ip_vs where it is a module.)"""
    if os.path.exists("/proc/net/ip_vs"):
        return True
    found = _genl_family_exists("IPVS")
    if found:
        return True
    return found is None and _module_known("ip_vs")


def ipvs_problems() -> list[str]:
    """What this kernel lacks for kube-proxy's IPVS mode (empty: nothing)."""
    out = []
    if not ipvs_available():
        out.append("no IP Virtual Server (ip_vs): /proc/net/ip_vs is missing and the IPVS netlink family "
                   "cannot be loaded")
    if not (os.path.exists("/proc/net/ip_set") or os.path.isdir("/sys/module/ip_set") or _module_known("ip_set")):
        out.append("no IP sets (ip_set)")
    if not (os.path.isdir("/sys/module/dummy") or _module_known("dummy")):
        out.append("no dummy links (kube-ipvs0)")
    return out


def unavailable_message(problems: Optional[list[str]] = None) -> Optional[str]:
    """None when IPVS mode can run here, else the error `netemu up` prints."""
    problems = ipvs_problems() if problems is None else problems
    if not problems:
        return None
    return (f"proxy mode ipvs cannot run on this kernel ({os.uname().release}): " + "; ".join(problems)
            + ". Modes that work here: " + ", ".join(WORKING_MODES_WITHOUT_IPVS)
            + " (spec.proxyMode in the Lab document, or `netemu up --proxy-mode iptables`). "
            "IPVS mode is tested in a throwaway VM instead: tests/e2e/test_ipvs_vm.py and test_ipvs_vm_lab.py")
