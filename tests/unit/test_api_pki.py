"""The lab PKI: certificates that real TLS stacks accept, and bearer tokens."""
from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import socket
import ssl
import stat
import threading
import time

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netemu.api import pki as P

IPS = ["127.0.0.1", "192.168.1.10", "10.96.0.1"]
DNS = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
       "kubernetes.default.svc.cluster.local"]


@pytest.fixture(scope="module")
def lab_pki() -> P.LabPki:
    return P.make_pki("lab", IPS, DNS)


@pytest.fixture(scope="module")
def other_pki() -> P.LabPki:
    return P.make_pki("other", IPS, DNS)


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _client_ctx(tmp_path, trust: P.LabPki, cert_from: P.LabPki | None = None, alpn=("h2", "http/1.1")):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default
    ctx.load_verify_locations(cadata=trust.ca_cert_pem.decode())
    if cert_from is not None:
        crt, key = tmp_path / "c.crt", tmp_path / "c.key"
        crt.write_bytes(cert_from.client_cert_pem)
        key.write_bytes(cert_from.client_key_pem)
        ctx.load_cert_chain(str(crt), str(key))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str = "kubernetes.default.svc"):
    """A TLS handshake over a socketpair plus one byte each way; returns what each side saw."""
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    server: dict = {}

    def serve():
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                server["peercert"] = s.getpeercert()
                server["alpn"] = s.selected_alpn_protocol()
                server["version"] = s.version()
                server["got"] = s.recv(1)
                s.sendall(b"y")
        except Exception as e:  # noqa: BLE001 - reported to the test
            server["error"] = e
            a.close()

    t = threading.Thread(target=serve)
    t.start()
    client: dict = {}
    try:
        with client_ctx.wrap_socket(b, server_hostname=hostname) as c:
            client["alpn"] = c.selected_alpn_protocol()
            c.sendall(b"x")
            client["got"] = c.recv(1)
    except Exception as e:  # noqa: BLE001
        client["error"] = e
        b.close()
    t.join(10)
    assert not t.is_alive()
    return server, client


def test_make_pki_is_fast():
    best = min(_timed(lambda: P.make_pki("lab", IPS, DNS)) for _ in range(3))
    assert best < 0.1


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_server_cert_names_every_ip_and_dns_name(lab_pki):
    cert = _cert(lab_pki.server_cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == set(DNS)
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address(i) for i in IPS}
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_ca_and_client_subjects_and_lifetimes(lab_pki):
    ca, client, server = (_cert(p) for p in (lab_pki.ca_cert_pem, lab_pki.client_cert_pem, lab_pki.server_cert_pem))
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "netemu-lab-ca"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kubernetes-admin"
    assert client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert client.issuer == ca.subject and server.issuer == ca.subject
    ca_life = ca.not_valid_after_utc - ca.not_valid_before_utc
    leaf_life = server.not_valid_after_utc - server.not_valid_before_utc
    assert datetime.timedelta(days=3649) < ca_life < datetime.timedelta(days=3651)
    assert datetime.timedelta(days=364) < leaf_life < datetime.timedelta(days=366)
    assert server.not_valid_before_utc <= datetime.datetime.now(datetime.timezone.utc)


def test_two_labs_get_distinct_cas(lab_pki, other_pki):
    assert lab_pki.ca_cert_pem != other_pki.ca_cert_pem
    assert lab_pki.admin_token != other_pki.admin_token
    assert len(base64.urlsafe_b64decode(lab_pki.admin_token + "=")) == 32


def test_handshake_with_client_certificate(tmp_path, lab_pki):
    server_ctx = P.server_ssl_context(lab_pki, str(tmp_path / "files"))
    server, client = _handshake(server_ctx, _client_ctx(tmp_path, lab_pki, cert_from=lab_pki))
    assert "error" not in server and "error" not in client
    assert P.client_identity(server["peercert"]) == "kubernetes-admin"
    assert P.client_groups(server["peercert"]) == ["system:masters"]
    assert server["got"] == b"x" and client["got"] == b"y"
    # kubectl offers h2 and http/1.1; it must be steered to http/1.1
    assert server["alpn"] == client["alpn"] == "http/1.1"
    assert server["version"] in ("TLSv1.2", "TLSv1.3")


def test_handshake_without_client_certificate_still_succeeds(tmp_path, lab_pki):
    server, client = _handshake(P.server_ssl_context(lab_pki, str(tmp_path)), _client_ctx(tmp_path, lab_pki))
    assert "error" not in server and "error" not in client
    assert server["peercert"] is None
    assert P.client_identity(server["peercert"]) is None
    assert client["got"] == b"y"


@pytest.mark.parametrize("hostname", ["localhost", "kubernetes.default.svc.cluster.local", "10.96.0.1",
                                      "127.0.0.1", "192.168.1.10"])
def test_every_san_verifies_with_hostname_checking(tmp_path, lab_pki, hostname):
    server, client = _handshake(P.server_ssl_context(lab_pki, str(tmp_path)), _client_ctx(tmp_path, lab_pki),
                                hostname)
    assert "error" not in client and client["got"] == b"y"


def test_unlisted_name_is_refused(tmp_path, lab_pki):
    _, client = _handshake(P.server_ssl_context(lab_pki, str(tmp_path)), _client_ctx(tmp_path, lab_pki),
                           "api.example.com")
    assert isinstance(client.get("error"), ssl.SSLCertVerificationError)


def test_client_of_another_lab_does_not_trust_this_server(tmp_path, lab_pki, other_pki):
    _, client = _handshake(P.server_ssl_context(lab_pki, str(tmp_path)), _client_ctx(tmp_path, other_pki))
    assert isinstance(client.get("error"), ssl.SSLCertVerificationError)


def test_client_certificate_from_another_ca_is_rejected(tmp_path, lab_pki, other_pki):
    # CERT_OPTIONAL: no certificate is fine, a foreign one is not
    server, _ = _handshake(P.server_ssl_context(lab_pki, str(tmp_path)),
                           _client_ctx(tmp_path, lab_pki, cert_from=other_pki))
    assert isinstance(server.get("error"), ssl.SSLError)
    assert "peercert" not in server


def test_client_offering_only_h2_gets_no_alpn_but_connects(tmp_path, lab_pki):
    server, client = _handshake(P.server_ssl_context(lab_pki, str(tmp_path)),
                                _client_ctx(tmp_path, lab_pki, alpn=("h2",)))
    assert "error" not in client and client["got"] == b"y"
    assert client["alpn"] is None


def test_server_context_settings_and_files(tmp_path, lab_pki):
    ctx = P.server_ssl_context(lab_pki, str(tmp_path / "pki"))
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    key = tmp_path / "pki" / "server.key"
    assert key.read_bytes() == lab_pki.server_key_pem
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_save_and_load_round_trip_with_private_modes(tmp_path, lab_pki):
    d = tmp_path / "pki"
    P.save(lab_pki, str(d))
    assert P.load(str(d)) == lab_pki
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in d.iterdir()}
    assert modes.pop("ca.crt") in (0o600, 0o644)
    assert set(modes) == {"ca.key", "server.crt", "server.key", "client.crt", "client.key", "admin.token"}
    assert set(modes.values()) == {0o600}  # also: no temporary files left behind


def test_save_replaces_existing_files(tmp_path, lab_pki, other_pki):
    P.save(lab_pki, str(tmp_path))
    P.save(other_pki, str(tmp_path))
    assert P.load(str(tmp_path)) == other_pki


def test_load_of_incomplete_directory_raises(tmp_path, lab_pki):
    P.save(lab_pki, str(tmp_path))
    os.unlink(tmp_path / "client.key")
    with pytest.raises(FileNotFoundError):
        P.load(str(tmp_path))


def test_service_account_token_round_trip(lab_pki):
    token = P.service_account_token(lab_pki, "kube-system", "coredns")
    assert P.verify_token(lab_pki, token) == "system:serviceaccount:kube-system:coredns"
    header, claims, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert claims["sub"] == "system:serviceaccount:kube-system:coredns"
    assert claims["kubernetes.io"]["namespace"] == "kube-system"
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == "coredns"
    assert claims["iss"] == P.TOKEN_ISSUER


def test_admin_token_is_the_admin(lab_pki):
    assert P.verify_token(lab_pki, lab_pki.admin_token) == "kubernetes-admin"
    assert P.verify_token(lab_pki, lab_pki.admin_token + "x") is None


def _b64json(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_tampered_tokens_are_rejected(lab_pki, other_pki):
    token = P.service_account_token(lab_pki, "default", "builder")
    header, claims_b64, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(claims_b64 + "=" * (-len(claims_b64) % 4)))
    claims["kubernetes.io"]["namespace"] = claims["sub"] = "system:serviceaccount:kube-system:builder"
    forged = f"{header}.{_b64json(claims)}.{sig}"
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    none_alg = f"{_b64json({'alg': 'none'})}.{claims_b64}."
    for bad in (forged, flipped, none_alg, token + ".x", "", "a.b.c", "not-a-token",
                P.service_account_token(other_pki, "default", "builder"), other_pki.admin_token):
        assert P.verify_token(lab_pki, bad) is None, bad


def test_expired_token_is_rejected(lab_pki):
    assert P.verify_token(lab_pki, P.service_account_token(lab_pki, "a", "b", expires_in=-1)) is None
    assert P.verify_token(lab_pki, P.service_account_token(lab_pki, "a", "b", expires_in=3600)) == \
        "system:serviceaccount:a:b"


def test_client_identity_from_peercert_dicts():
    cert = {"subject": ((("organizationName", "system:masters"),), (("commonName", "alice"),))}
    assert P.client_identity(cert) == "alice"
    assert P.client_groups(cert) == ["system:masters"]
    assert P.client_identity(None) is None
    assert P.client_identity({}) is None
