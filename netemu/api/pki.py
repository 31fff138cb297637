"""A lab's PKI, as kind's kubeadm makes it: one CA, an API server certificate, an admin client
certificate (CN=kubernetes-admin, O=system:masters), plus bearer tokens (an admin token and
ServiceAccount JWTs signed with the CA key).

EC P-256 everywhere: a whole PKI is generated in a few milliseconds, so ``up`` never waits on RSA.
"""
from __future__ import annotations

import base64
import datetime
import hmac
import ipaddress
import json
import os
import secrets
import ssl
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ADMIN_USER = "kubernetes-admin"
ADMIN_GROUP = "system:masters"
# What a bound ServiceAccount token of a kind cluster carries as issuer and audience.
TOKEN_ISSUER = "https://kubernetes.default.svc.cluster.local"

CA_DAYS = 3650
LEAF_DAYS = 365

# file name -> LabPki field; only the CA certificate is public
_FILES = {
    "ca.crt": "ca_cert_pem",
    "ca.key": "ca_key_pem",
    "server.crt": "server_cert_pem",
    "server.key": "server_key_pem",
    "client.crt": "client_cert_pem",
    "client.key": "client_key_pem",
    "admin.token": "admin_token",
}


@dataclass
class LabPki:
    ca_cert_pem: bytes
    ca_key_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes
    client_cert_pem: bytes
    client_key_pem: bytes
    admin_token: str  # bearer token alternative to the admin client certificate


# --- generation -----------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str, org: Optional[str] = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, pub, days: int) -> x509.CertificateBuilder:
    # backdated a little so a peer whose clock lags by minutes still accepts it
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False))


def _leaf(ca_key, ca_cert: x509.Certificate, subject: x509.Name, eku, sans=None):
    key = _key()
    b = (_builder(subject, ca_cert.subject, key.public_key(), LEAF_DAYS)
         # AKI is required by strict verifiers (Python 3.13's VERIFY_X509_STRICT, Go is lenient)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                      crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([eku]), critical=False))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def make_pki(lab: str, server_ips: list[str], dns_names: list[str]) -> LabPki:
    """A fresh CA and leaf certificates. The server certificate names every IP and DNS name a client
    may dial (Go ignores the CN since 1.15: only SANs count)."""
    ca_key = _key()
    ca_name = _name(f"netemu-{lab}-ca")
    ca_cert = (_builder(ca_name, ca_name, ca_key.public_key(), CA_DAYS)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(dns_names)]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(server_ips)]
    server_cert, server_key = _leaf(ca_key, ca_cert, _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    client_cert, client_key = _leaf(ca_key, ca_cert, _name(ADMIN_USER, ADMIN_GROUP), ExtendedKeyUsageOID.CLIENT_AUTH)
    return LabPki(ca_cert_pem=ca_cert.public_bytes(serialization.Encoding.PEM), ca_key_pem=_key_pem(ca_key),
                  server_cert_pem=server_cert, server_key_pem=server_key,
                  client_cert_pem=client_cert, client_key_pem=client_key,
                  admin_token=secrets.token_urlsafe(32))


# --- files ----------------------------------------------------------------------------------


def _write_atomic(path: str, data: bytes, mode: int) -> None:
    # temp file in the same directory + rename: a reader sees the old file or the new, never half
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save(pki: LabPki, directory: str) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name, attr in _FILES.items():
        data = getattr(pki, attr)
        _write_atomic(os.path.join(directory, name), data.encode() if isinstance(data, str) else data,
                      0o644 if name == "ca.crt" else 0o600)


def load(directory: str) -> LabPki:
    """Raises FileNotFoundError when any file is missing (the caller makes a new PKI)."""
    fields = {}
    for name, attr in _FILES.items():
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        fields[attr] = data.decode().strip() if attr == "admin_token" else data
    return LabPki(**fields)


# --- TLS ------------------------------------------------------------------------------------


def server_ssl_context(pki: LabPki, files_dir: str) -> ssl.SSLContext:
    """The API server's TLS context. ``files_dir`` receives server.crt/server.key if they are not
    there already, because ssl can only load a certificate chain from files."""
    os.makedirs(files_dir, mode=0o700, exist_ok=True)
    paths = {}
    for name in ("server.crt", "server.key"):
        path = paths[name] = os.path.join(files_dir, name)
        data = getattr(pki, _FILES[name])
        try:
            with open(path, "rb") as f:
                same = f.read() == data
        except FileNotFoundError:
            same = False
        if not same:
            _write_atomic(path, data, 0o600)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(paths["server.crt"], paths["server.key"])
    ctx.load_verify_locations(cadata=pki.ca_cert_pem.decode())
    # Ask for a client certificate but accept none: bearer tokens must work too. A certificate that
    # *is* sent must chain to our CA, or the handshake fails.
    ctx.verify_mode = ssl.CERT_OPTIONAL
    # client-go offers ["h2", "http/1.1"]; choosing http/1.1 keeps Go's net/http on HTTP/1.1 (it
    # only speaks h2 when ALPN selects it). A client offering only h2 gets no ALPN answer, not an error.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _subject_field(peercert: Optional[dict], field: str) -> list[str]:
    if not peercert:  # None: no certificate; {}: one not verified
        return []
    return [value for rdn in peercert.get("subject", ()) for key, value in rdn if key == field]


def client_identity(peercert: Optional[dict]) -> Optional[str]:
    """The user name of a verified client certificate (its CN), from SSLSocket.getpeercert()."""
    cns = _subject_field(peercert, "commonName")
    return cns[0] if cns else None


def client_groups(peercert: Optional[dict]) -> list[str]:
    """The groups of a client certificate (its O attributes), as Kubernetes reads them."""
    return _subject_field(peercert, "organizationName")


# --- tokens ---------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_b64(obj) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())  # compact, as real tokens are


def service_account_token(pki: LabPki, namespace: str, sa: str, *, uid: str = "",
                          expires_in: Optional[int] = None) -> str:
    """A JWT shaped like a bound ServiceAccount token, signed ES256 with the CA key: it verifies
    with the CA certificate alone, so the server needs no token table."""
    now = int(time.time())
    sa_claim = {"name": sa, **({"uid": uid} if uid else {})}
    claims = {"aud": [TOKEN_ISSUER], "iat": now, "nbf": now, "iss": TOKEN_ISSUER,
              "sub": f"system:serviceaccount:{namespace}:{sa}",
              "kubernetes.io": {"namespace": namespace, "serviceaccount": sa_claim}}
    if expires_in is not None:
        claims["exp"] = now + expires_in
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert_pem)
    header = {"alg": "ES256", "kid": _b64(ca_cert.fingerprint(hashes.SHA256())[:16])}
    signing_input = f"{_json_b64(header)}.{_json_b64(claims)}"
    key = serialization.load_pem_private_key(pki.ca_key_pem, password=None)
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    # JWS wants the raw 64-byte r||s, not the DER that cryptography returns
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def verify_token(pki: LabPki, token: str) -> Optional[str]:
    """The user a bearer token authenticates, or None."""
    if pki.admin_token and hmac.compare_digest(token.encode(), pki.admin_token.encode()):
        return ADMIN_USER
    try:
        header_b64, claims_b64, sig_b64 = token.split(".")
        header = json.loads(_unb64(header_b64))
        if header.get("alg") != "ES256":  # never let the token pick a weaker algorithm
            return None
        sig = _unb64(sig_b64)
        if len(sig) != 64:
            return None
        ca_cert = x509.load_pem_x509_certificate(pki.ca_cert_pem)
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        ca_cert.public_key().verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        claims = json.loads(_unb64(claims_b64))
        now = time.time()
        if "exp" in claims and now >= claims["exp"]:
            return None
        if "nbf" in claims and now + 60 < claims["nbf"]:  # a minute of clock skew
            return None
        kube = claims["kubernetes.io"]
        sub = f"system:serviceaccount:{kube['namespace']}:{kube['serviceaccount']['name']}"
        return sub if claims.get("sub") == sub and claims.get("iss") == TOKEN_ISSUER else None
    except (InvalidSignature, ValueError, KeyError, TypeError, AttributeError):
        # ValueError covers bad base64, bad JSON and a wrong number of parts
        return None
