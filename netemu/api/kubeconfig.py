"""kind-style kubeconfig handling: ``up`` merges a cluster, user and context named ``netemu-<lab>``
into the invoking user's kubeconfig and makes it current; ``down`` takes them out again.

Locking: writers of one kubeconfig take an flock on a hidden file beside it (it outlives crashes
harmlessly) *and* the ``<file>.lock`` that client-go and kind create with O_EXCL and delete. The
latter must never be left behind: while it exists, ``kubectl config ...`` fails with "file exists".
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import pwd
import tempfile
import time
from typing import Iterator, Mapping, Optional

import yaml

log = logging.getLogger("netemu.kubeconfig")

EXT_NAME = "netemu"  # our context extension; remembers the context that was current before us
LOCK_WAIT = 5.0  # seconds to wait for a kubectl/kind <file>.lock before deeming it stale
_SECTIONS = ("clusters", "users", "contexts")
# libyaml when present: the pure-Python parser takes ~10 ms per certificate-laden entry
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class KubeconfigError(Exception):
    """The file is not a kubeconfig we can safely rewrite (left untouched)."""


def entry_name(lab: str) -> str:
    return f"netemu-{lab}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def render(lab: str, server: str, pki) -> dict:
    """A complete kubeconfig for one lab, authenticating with the admin client certificate."""
    name = entry_name(lab)
    return {
        "apiVersion": "v1",
        "clusters": [{"cluster": {"certificate-authority-data": _b64(pki.ca_cert_pem), "server": server},
                      "name": name}],
        "contexts": [{"context": {"cluster": name, "user": name}, "name": name}],
        "current-context": name,
        "kind": "Config",
        "preferences": {},
        "users": [{"name": name, "user": {"client-certificate-data": _b64(pki.client_cert_pem),
                                          "client-key-data": _b64(pki.client_key_pem)}}],
    }


def target_path(env: Mapping[str, str] = os.environ) -> tuple[str, int, int]:
    """(kubeconfig path, uid, gid) for the user who ran ``sudo netemu up`` (or ran it directly)."""
    user = None
    sudo_user, sudo_uid, sudo_gid = env.get("SUDO_USER"), env.get("SUDO_UID"), env.get("SUDO_GID")
    with contextlib.suppress(KeyError):
        user = pwd.getpwnam(sudo_user) if sudo_user else None
    if user is None and _int(sudo_uid, -1) >= 0:
        with contextlib.suppress(KeyError):
            user = pwd.getpwuid(int(sudo_uid))
    uid = _int(sudo_uid, user.pw_uid if user else os.getuid())
    gid = _int(sudo_gid, user.pw_gid if user else os.getgid())
    first = next((p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p), None)
    if first:  # like kind: write into the first file of the list
        return os.path.abspath(first), uid, gid
    if user:
        home = user.pw_dir
    else:
        try:
            home = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:
            home = env.get("HOME") or "/root"
    return os.path.join(home, ".kube", "config"), uid, gid


def _int(text: Optional[str], default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


# --- file handling --------------------------------------------------------------------------


def _makedirs(directory: str, uid: int, gid: int) -> None:
    """Create missing directories 0700 owned by the user (root must not own the user's ~/.kube)."""
    missing = []
    d = directory
    while d and not os.path.isdir(d):
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)
            _chown(d, uid, gid)


def _chown(path_or_fd, uid: int, gid: int) -> None:
    try:
        if isinstance(path_or_fd, int):
            os.fchown(path_or_fd, uid, gid)
        else:
            os.chown(path_or_fd, uid, gid)
    except PermissionError:  # not root: the file is ours anyway
        pass


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    directory, base = os.path.split(path)
    st = os.stat(directory)
    fd = os.open(os.path.join(directory, f".{base}.netemu-lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _chown(fd, st.st_uid, st.st_gid)
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel even if we die
        held = _take_client_go_lock(path + ".lock")
        try:
            yield
        finally:
            if held:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path + ".lock")
    finally:
        os.close(fd)


def _take_client_go_lock(lock: str) -> bool:
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            return True
        except FileExistsError:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
    # kubectl holds it for milliseconds; one this old was left by a crash
    log.warning("removing stale kubeconfig lock %s", lock)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock)
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except FileExistsError:
        return False


def _read(path: str) -> dict:
    """The parsed file, {} when it is missing or empty; KubeconfigError when it is not a kubeconfig."""
    try:
        with open(path, "rb") as f:
            cfg = yaml.load(f, Loader=_Loader)
    except FileNotFoundError:
        return {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise KubeconfigError(f"{path}: not YAML: {e}") from e
    if cfg is None:
        return {}
    if not isinstance(cfg, dict) or any(not isinstance(cfg.get(s) or [], list) for s in _SECTIONS):
        raise KubeconfigError(f"{path}: not a kubeconfig")
    return cfg


def _write(path: str, cfg: dict, uid: int, gid: int) -> None:
    """Atomic replace; an existing file keeps its mode and owner, a new one is 0600 for uid:gid."""
    real = os.path.realpath(path)  # a symlinked kubeconfig stays a symlink
    try:
        st = os.stat(real)
        mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
    except FileNotFoundError:
        mode = 0o600
    data = yaml.dump(cfg, Dumper=_Dumper, default_flow_style=False, sort_keys=False).encode()
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(real), prefix=".netemu-kubeconfig-")
    try:
        os.fchmod(fd, mode)
        _chown(fd, uid, gid)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _ours(entry, name: str) -> bool:
    return isinstance(entry, dict) and entry.get("name") == name


def _previous(ctx_entry) -> Optional[str]:
    """The context recorded in our extension of a context entry, if any."""
    try:
        for ext in ctx_entry["context"].get("extensions") or []:
            if ext.get("name") == EXT_NAME:
                return ext["extension"].get("previous-context") or None
    except (KeyError, TypeError, AttributeError):
        pass
    return None


# --- merge / remove -------------------------------------------------------------------------


def merge(path: str, lab: str, server: str, pki, uid: int, gid: int) -> str:
    """Add (or replace) this lab's entries and make its context current. Returns the path written,
    for ``down`` to pass to :func:`remove`. Raises KubeconfigError (file untouched) or OSError."""
    name = entry_name(lab)
    ours = render(lab, server, pki)
    path = os.path.abspath(path)
    _makedirs(os.path.dirname(path), uid, gid)
    with _locked(path):
        cfg = _read(path)
        old_ctx = next((c for c in cfg.get("contexts") or [] if _ours(c, name)), None)
        current = cfg.get("current-context") or None
        # re-running up for the same lab must not record itself as the context to go back to
        previous = _previous(old_ctx) if current == name else current
        ctx = ours["contexts"][0]
        if previous:
            ctx["context"]["extensions"] = [{"name": EXT_NAME, "extension": {"previous-context": previous}}]
        cfg.setdefault("apiVersion", "v1")
        cfg.setdefault("kind", "Config")
        cfg.setdefault("preferences", {})
        for section in _SECTIONS:
            cfg[section] = [e for e in cfg.get(section) or [] if not _ours(e, name)] + ours[section]
        cfg["current-context"] = name
        _write(path, cfg, uid, gid)
    return path


def remove(path: str, lab: str) -> bool:
    """Take this lab's entries out again; True if the file changed. If our context was current,
    the one that was current before ``up`` comes back (or none: an arbitrary other context could
    aim kubectl at an unrelated cluster). Never raises: problems are logged and the file left alone."""
    name = entry_name(lab)
    path = os.path.abspath(path)
    try:
        if not os.path.exists(path):
            return False
        with _locked(path):
            cfg = _read(path)
            if not (cfg.get("current-context") == name
                    or any(_ours(e, name) for s in _SECTIONS for e in cfg.get(s) or [])):
                return False
            previous = next((_previous(c) for c in cfg.get("contexts") or [] if _ours(c, name)), None)
            for section in _SECTIONS:
                if section in cfg:
                    cfg[section] = [e for e in cfg[section] or [] if not _ours(e, name)]
            remaining = {c.get("name") for c in cfg.get("contexts") or [] if isinstance(c, dict)}
            # another lab that recorded us as its previous context now goes back to ours
            for c in cfg.get("contexts") or []:
                if _previous(c) == name:
                    _set_previous(c, previous)
            if cfg.get("current-context") == name:
                if previous and previous in remaining:
                    cfg["current-context"] = previous
                else:
                    cfg.pop("current-context")
            st = os.stat(path)
            _write(path, cfg, st.st_uid, st.st_gid)
            return True
    except (KubeconfigError, OSError) as e:
        log.warning("kubeconfig %s left as it is: %s", path, e)
        return False
    except Exception:  # a hand-edited file of odd shape must not fail `down`
        log.exception("kubeconfig %s left as it is", path)
        return False


def _set_previous(ctx_entry: dict, previous: Optional[str]) -> None:
    exts = [e for e in ctx_entry["context"].get("extensions") or []
            if not (isinstance(e, dict) and e.get("name") == EXT_NAME)]
    if previous:
        exts.append({"name": EXT_NAME, "extension": {"previous-context": previous}})
    if exts:
        ctx_entry["context"]["extensions"] = exts
    else:
        ctx_entry["context"].pop("extensions", None)
