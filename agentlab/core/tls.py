"""TLS for the servers agentlab runs: a certificate authority made per lab, the certificates
it signs, and the client side, an ``ssl.SSLContext`` that trusts that authority and no other.

    certs = LabCertificates.generate(store / "tls", mutual=True)   # ca.pem, server-*.pem, ...
    certs.server_settings()          # nats-server's tls { } block, as a dict
    context = certs.client_files().context()   # for nats.connect(url, tls=context)
    remember_tls(url, certs.client_files())    # every connection of this process to url

The keys are written mode 0600 into the lab's own directory and never printed; the CA's key
is not written at all, so nobody, the lab included, can sign another certificate with it
once the lab has made its own. Processes agentlab starts find the files through the
credentials file (``AGENTLAB_NATS_CREDENTIALS``), whose ``ca``, ``cert`` and ``key`` are the
nats CLI context's fields of those names. Generating needs the ``cryptography`` package
(the ``tls`` extra); using the files needs only the standard library's ``ssl``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from ..errors import AgentlabError, ServerUnreachable
from .credentials import context_for, endpoints, write_private

__all__ = ["TLS_MODES", "LabCertificates", "TlsFailed", "TlsFiles", "TlsMode", "TlsUnavailable",
           "forget_tls", "known_tls", "remember_tls", "requires_client_certificate",
           "tls_for", "tls_mode"]

TlsMode = Literal["tls", "mutual"]
# What tls= accepts, and what each means: the values a clear error lists.
TLS_MODES = {"False or None": "plain text (the default)",
             "True or 'tls'": "TLS: clients verify the server's certificate",
             "'mutual'": "mutual TLS: the server also requires a client certificate"}
# Every name a client on this machine (or a compose service) may use for the server.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
HANDSHAKE_TIMEOUT = 5  # seconds; nats-server's default (2 s) is short on a loaded machine


def tls_mode(value: object) -> TlsMode | None:
    """``tls=`` as one of None, ``"tls"`` or ``"mutual"``; anything else is refused."""
    if value is None or value is False:
        return None
    if value is True or value == "tls":
        return "tls"
    if value == "mutual":
        return "mutual"
    accepted = "; ".join(f"{k}: {v}" for k, v in TLS_MODES.items())
    raise ValueError(f"tls={value!r} is not a TLS mode. Accepted: {accepted}.")


class TlsUnavailable(AgentlabError, ImportError):
    """The ``cryptography`` package, which makes the lab's certificates, is missing."""

    def __init__(self) -> None:
        super().__init__(
            "TLS needs the `cryptography` package to make the lab's certificate authority "
            "and certificates: pip install 'agentlab-nats[tls]' (or cryptography>=42).")


class TlsFailed(ServerUnreachable):
    """A connection's TLS did not hold: the server's certificate is not one the client
    trusts, the server wants a client certificate, or it offers no TLS at all."""

    def __init__(self, url: str, error: ssl.SSLError | None, *,
                 closed_after_handshake: bool = False):
        text = "the server closed the connection after the handshake" \
            if closed_after_handshake else str(error) if error is not None else "no TLS"
        if closed_after_handshake:  # the same refusal, when a reset overtook the TLS alert
            text += ", and it requires client certificates"
        if error is None and not closed_after_handshake:
            why = ("the server does not ask for TLS, so this connection would travel in plain "
                   "text although its URL (tls://) or its tls= context asked for TLS. Use a "
                   "nats:// URL and no tls= for a plain-text server, or start it with TLS "
                   "(agentlab.start(tls=True), agentlab server --tls)")
        elif closed_after_handshake or "CERTIFICATE_REQUIRED" in text or \
                "certificate required" in text:
            why = ("the server requires a client certificate (mutual TLS) and this client "
                   "gave none it accepts. Connect with the lab's client certificate: the "
                   "`cert` and `key` of the credentials file ($AGENTLAB_NATS_CREDENTIALS, "
                   "lab.client_env()), or Client.open(url, tls=context) with "
                   "context.load_cert_chain(cert, key)")
        elif isinstance(error, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY" in text:
            why = ("the server's certificate is not signed by a CA this client trusts, or "
                   "does not name the host in the URL. A lab's server is signed by the lab's "
                   "own CA: agentlab trusts it by itself in the process that runs the lab and "
                   "in the processes given its credentials file ($AGENTLAB_NATS_CREDENTIALS, "
                   "whose `ca` names the CA); another client needs that CA, e.g. "
                   "ssl.create_default_context(cafile=CA)")
        else:
            why = "the TLS handshake failed"
        self.url = url
        # The message is this one, not ServerUnreachable's (which says to start a server).
        Exception.__init__(self, f"TLS with the NATS server at {url} failed ({text}): {why}.")


class _SslEofNotice(logging.Filter):
    # asyncio warns at every close of a TLS connection that nats-py's stream protocol asks to
    # keep its half-closed socket open, which TLS cannot do and nothing here needs.
    MESSAGE = "returning true from eof_received() has no effect when using ssl"

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.MESSAGE


def _quiet_ssl_eof() -> None:
    log = logging.getLogger("asyncio")
    if not any(isinstance(f, _SslEofNotice) for f in log.filters):
        log.addFilter(_SslEofNotice())


@dataclass(frozen=True)
class TlsFiles:
    """What a client needs: the CA to trust, and for mutual TLS its certificate and key."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    @cached_property
    def _context(self) -> ssl.SSLContext:
        _quiet_ssl_eof()
        # Verifies the chain and the host name (nats-py passes the URL's host, and the
        # server certificate names 127.0.0.1, ::1 and localhost) against this CA only.
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        if self.cert is not None:
            context.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        return context

    def context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` for ``nats.connect(..., tls=...)`` (one, shared)."""
        return self._context

    def context_fields(self) -> dict[str, str]:
        """The nats CLI context's ``ca``, ``cert`` and ``key`` (absolute paths)."""
        fields = {"ca": str(self.ca)}
        if self.cert is not None and self.key is not None:
            fields |= {"cert": str(self.cert), "key": str(self.key)}
        return fields

    @classmethod
    def from_context(cls, context: dict[str, Any], folder: Path) -> TlsFiles | None:
        """The files a nats CLI context names (relative paths: against ``folder``, the
        context file's own, so a folder of certificates can be mounted anywhere)."""
        def path(key: str) -> Path | None:
            value = context.get(key)
            return (folder / Path(str(value)).expanduser()) if value else None

        ca = path("ca")
        return cls(ca, path("cert"), path("key")) if ca is not None else None


@dataclass(frozen=True)
class LabCertificates:
    """A lab's CA and the certificates it signed, as files in ``directory``."""

    directory: Path
    mutual: bool

    CA, SERVER_CERT, SERVER_KEY = "ca.pem", "server-cert.pem", "server-key.pem"
    CLIENT_CERT, CLIENT_KEY = "client-cert.pem", "client-key.pem"

    @property
    def ca_file(self) -> Path:
        return self.directory / self.CA

    @property
    def server_cert(self) -> Path:
        return self.directory / self.SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.directory / self.SERVER_KEY

    @property
    def client_cert(self) -> Path:
        return self.directory / self.CLIENT_CERT

    @property
    def client_key(self) -> Path:
        return self.directory / self.CLIENT_KEY

    @classmethod
    def generate(cls, directory: str | Path, *, mutual: bool = False,
                 hosts: Iterable[str] = (), days: int = 30,
                 name: str = "agentlab") -> LabCertificates:
        """A new CA, a server certificate for ``hosts`` and the loopback names (it serves
        routes too, so it is good for both ends of a TLS connection), and with ``mutual`` a
        client certificate: PEM files in ``directory`` (created, mode 0700), keys 0600."""
        try:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
        except ImportError:
            raise TlsUnavailable() from None

        folder = Path(directory).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)  # mkdir leaves a folder that already existed as it was
        now = datetime.datetime.now(datetime.timezone.utc)
        start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

        def subject(common_name: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                              x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

        def pem(cert: x509.Certificate) -> str:
            return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

        def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
            return key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode("ascii")

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = subject(f"{name} lab CA")
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(start).not_valid_after(end)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                           crl_sign=True, content_commitment=False,
                                           key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False,
                                           decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))

        def leaf(common_name: str, usages: list[x509.ObjectIdentifier],
                 names: list[x509.GeneralName]) -> tuple[str, str]:
            key = ec.generate_private_key(ec.SECP256R1())
            builder = (x509.CertificateBuilder().subject_name(subject(common_name))
                       .issuer_name(ca_name).public_key(key.public_key())
                       .serial_number(x509.random_serial_number())
                       .not_valid_before(start).not_valid_after(end)
                       .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                      critical=True)
                       .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                       .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                           ca_key.public_key()), critical=False))
            if names:
                builder = builder.add_extension(x509.SubjectAlternativeName(names),
                                                critical=False)
            return pem(builder.sign(ca_key, hashes.SHA256())), key_pem(key)

        alt_names: list[x509.GeneralName] = []
        for host in dict.fromkeys([*hosts, *LOOPBACK_NAMES]):  # in order, once each
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt_names.append(x509.DNSName(host))
        both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        certs = cls(folder, mutual)
        server_pem, server_key = leaf(f"{name} nats-server", both, alt_names)
        write_private(certs.ca_file, pem(ca))
        write_private(certs.server_cert, server_pem)
        write_private(certs.server_key, server_key)
        if mutual:
            client_pem, client_key = leaf(f"{name} client", [ExtendedKeyUsageOID.CLIENT_AUTH],
                                          [])
            write_private(certs.client_cert, client_pem)
            write_private(certs.client_key, client_key)
        return certs

    def server_settings(self, *, verify: bool | None = None,
                        folder: str | None = None) -> dict[str, Any]:
        """nats-server's ``tls { }`` block: this certificate and key, this CA, and with
        ``verify`` (default: mutual) a client certificate required. ``folder`` names the
        files where the server sees them (a container's mount) instead of here."""
        where = (lambda name: f"{folder.rstrip('/')}/{name}") if folder else \
            (lambda name: (self.directory / name).as_posix())
        settings: dict[str, Any] = {"cert_file": where(self.SERVER_CERT),
                                    "key_file": where(self.SERVER_KEY),
                                    "ca_file": where(self.CA), "timeout": HANDSHAKE_TIMEOUT}
        if self.mutual if verify is None else verify:
            settings["verify"] = True
        return settings

    def client_files(self) -> TlsFiles:
        """What a client of the lab uses: the CA, and for mutual TLS the client's pair."""
        if self.mutual:
            return TlsFiles(self.ca_file, self.client_cert, self.client_key)
        return TlsFiles(self.ca_file)


# The TLS of the servers this process runs, by endpoint (host:port), as credentials.py
# keeps their logins: a connection to one of them trusts its CA without being told.
_known: dict[str, TlsFiles] = {}
_known_lock = threading.Lock()


def remember_tls(url: str, files: TlsFiles) -> None:
    with _known_lock:
        for endpoint in endpoints(url):
            _known[endpoint] = files


def forget_tls(url: str, files: TlsFiles) -> None:
    with _known_lock:
        for endpoint in endpoints(url):
            if _known.get(endpoint) == files:
                del _known[endpoint]


def known_tls(url: str) -> TlsFiles | None:
    """The TLS files of a server this process runs at ``url`` (its first endpoint that is)."""
    with _known_lock:
        return next((_known[e] for e in endpoints(url) if e in _known), None)


def tls_for(url: str, default_url: str | None = None) -> TlsFiles | None:
    """The TLS files a connection to ``url`` uses when it is given none: the server's own if
    this process runs it, else those the credentials file ``$AGENTLAB_NATS_CREDENTIALS``
    names (``ca``, ``cert``, ``key``) when ``url`` is that file's URL (or
    ``$AGENTLAB_NATS_URL``), else None (the system's CAs, for a ``tls://`` URL)."""
    found = known_tls(url)
    if found is not None:
        return found
    # A URL with a login of its own still trusts the CA the file names.
    applies = context_for(url, default_url, own_login_ok=True)
    if applies is None:
        return None
    path, context = applies
    return TlsFiles.from_context(context, Path(path).expanduser().resolve().parent)


async def requires_client_certificate(url: str, timeout: float = 2.0) -> bool:
    """Whether the (first) server at ``url`` says in its greeting that it verifies client
    certificates (``tls_verify``): the greeting comes before TLS, so a plain read tells. For
    a connect that lost its socket right after the handshake, the one way a server refuses a
    client without a certificate when the connection reset overtakes TLS's alert."""
    found = endpoints(url)
    if not found:
        return False
    host, _, port = found[0].rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)),
                                                timeout)
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        finally:
            writer.close()
        if not line.startswith(b"INFO "):
            return False
        return bool(json.loads(line[5:]).get("tls_verify"))
    except (OSError, ValueError, asyncio.TimeoutError):
        return False
