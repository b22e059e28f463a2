"""An HTTPS Loki stand-in for tests: a TLS listener on 127.0.0.1 in front of a
:class:`~tests.support.fakeloki.FakeLoki` (each TLS connection's bytes piped to the fake, so
Loki's answers stay the fake's), with certificates made for the test by ``cryptography``: a
CA, the server's certificate (for 127.0.0.1 and localhost) and a client certificate.
``require_client_cert`` makes the handshake refuse a client that presents no certificate
signed by the test CA, as a Loki behind mutual TLS does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Certs", "TlsFront", "make_certs"]


@dataclass(frozen=True)
class Certs:
    """PEM files: the CA, the server's certificate and key, a client's certificate and key,
    and a client certificate signed by another CA (one the server does not trust)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
           issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
           server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
        usage = x509.ExtendedKeyUsageOID.SERVER_AUTH if server else \
            x509.ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certs(directory: Path) -> Certs:
    """A fresh CA, server and client certificates in ``directory``."""
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("shipper test CA", ca_key, "shipper test CA", ca_key, ca=True)
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    files: dict[str, Path] = {"ca": directory / "ca.pem"}
    other_key = ec.generate_private_key(ec.SECP256R1())
    for name, common, server, issuer, issuer_key in (
            ("server", "127.0.0.1", True, "shipper test CA", ca_key),
            ("client", "shipper-client", False, "shipper test CA", ca_key),
            ("stranger", "stranger", False, "another CA", other_key)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(common, key, issuer, issuer_key, server=server)
        files[f"{name}_cert"] = directory / f"{name}.pem"
        files[f"{name}_cert"].write_bytes(cert.public_bytes(pem))
        files[f"{name}_key"] = _write_key(key, directory / f"{name}.key")
    return Certs(**files)


class TlsFront:
    """TLS on 127.0.0.1 (``url``: ``https://127.0.0.1:PORT``), piping each connection to
    ``127.0.0.1:backend_port``. ``handshakes_refused`` counts clients the TLS handshake
    refused (no client certificate, or one the CA did not sign)."""

    def __init__(self, certs: Certs, backend_port: int, *,
                 require_client_cert: bool = True) -> None:
        self.backend_port = backend_port
        self.handshakes_refused = 0
        self.peers: list[str] = []
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(str(certs.server_cert), str(certs.server_key))
        if require_client_cert:
            self._context.verify_mode = ssl.CERT_REQUIRED
            self._context.load_verify_locations(str(certs.ca))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(30)
        try:
            conn = self._context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshakes_refused += 1
            raw.close()
            return
        peer = conn.getpeercert() or {}
        self.peers.append(str(dict(x[0] for x in peer.get("subject", ())).get("commonName")))
        backend = socket.create_connection(("127.0.0.1", self.backend_port))
        threading.Thread(target=self._pipe, args=(backend, conn), daemon=True).start()
        self._pipe(conn, backend)

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            for s in (source, target):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

    def stop(self) -> None:
        self._closed = True
        self._listener.close()

    def __enter__(self) -> TlsFront:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
