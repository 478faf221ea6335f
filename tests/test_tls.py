"""TLS: ``agentlab.start(tls=True)`` serves TLS only, with a CA made per lab; mutual TLS.

A client that stays in plain text is refused (a raw socket speaking the protocol, and nats-py
with a ``nats://`` URL and no CA, which upgrades and then cannot verify the lab's
certificate); a client trusting another CA (trustme's) fails verification with an error that
says which CA to trust; ``tls="mutual"`` refuses a client without the lab's client
certificate. Every connection of the lab, a worker process given ``lab.client_env()``, an
organisation on ``cluster=3`` whose routes are TLS too, and the tenant audit work over it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

import nats
import nats.errors
import pytest
import trustme

import agentlab
from agentlab import Subjects
from agentlab.core.server import EmbeddedServer, find_nats_server
from agentlab.core.tls import LabCertificates, TlsFailed, tls_mode
from agentlab.org import Organisation, Task, TaskCompleted, declare_reference_streams
from helpers import clean_env

S = Subjects()
pytestmark = pytest.mark.timeout(180)


def host_port(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].split(",")[0].rsplit(":", 1)
    return host, int(port)


async def _nats_py(url: str, **options) -> None:
    """A plain nats-py connection (no agentlab in it): connect, round-trip, close."""
    async def quiet(error: Exception) -> None:
        pass

    nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0,
                            connect_timeout=5, error_cb=quiet, **options)
    try:
        await nc.flush(timeout=5)
    finally:
        await nc.close()


def nats_py(url: str, **options) -> None:
    asyncio.run(_nats_py(url, **options))


def plain_text_is_refused(url: str, login: dict[str, str]) -> None:
    """A client that speaks the protocol without TLS: the server's INFO demands TLS, and the
    plain CONNECT that follows (with the right login) gets the connection closed, no PONG."""
    with socket.create_connection(host_port(url), timeout=10) as sock:
        info = json.loads(sock.recv(4096).split(b" ", 1)[1])
        assert info["tls_required"] is True
        connect = {"user": login["user"], "pass": login["password"], "verbose": False}
        sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        received = b""
        while chunk := sock.recv(4096):  # until the server closes it
            received += chunk
        assert b"PONG" not in received


# -- the acceptance test ------------------------------------------------------------------------
def test_a_plain_connect_is_refused_and_the_labs_tls_gets_in(fresh_lab):
    lab = fresh_lab(tls=True)
    assert lab.url.startswith("tls://127.0.0.1:")
    plain_text_is_refused(lab.url, lab.login())
    from agentlab.core.tls import requires_client_certificate

    assert asyncio.run(requires_client_certificate(lab.url)) is False  # TLS, no client certs
    # nats-py given a nats:// URL upgrades when told to, and cannot trust the lab's CA.
    with pytest.raises(ssl.SSLCertVerificationError):
        nats_py(lab.url.replace("tls://", "nats://"), **lab.login())
    # With the lab's CA it gets in; so does every connection agentlab opens by itself.
    nats_py(lab.url, tls=lab.tls_context(), **lab.login())
    ca_only = ssl.create_default_context(cafile=json.loads(
        Path(lab.credentials_path).read_text())["ca"])
    nats_py(lab.url, tls=ca_only, **lab.login())
    sub = lab.connect("cto").subscribe("tls.ping")
    with agentlab.Client.open(lab.url, name="same-process") as same:
        same.publish("tls.ping", "pong")
    assert sub.next(timeout=5).text == "pong"
    assert "TLS" in lab._repr_html_() and "the lab's own CA" in lab._repr_html_()
    from agentlab.observe import Observer

    observer = Observer(lab).start()  # an observer's own connection, opened from the lab's
    try:
        assert observer.client is not None and not observer.client.is_closed
    finally:
        observer.stop()


def test_the_certificates_are_the_labs_own_private_and_never_printed(fresh_lab):
    lab = fresh_lab(tls=True)
    folder = lab.server.store_dir / "tls"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["ca.pem", "server-cert.pem", "server-key.pem"]  # no CA key on disk
    assert all(p.stat().st_mode & 0o077 == 0 for p in folder.iterdir())
    assert folder.stat().st_mode & 0o077 == 0
    context = json.loads(Path(lab.credentials_path).read_text())
    assert set(context) == {"description", "url", "user", "password", "ca"}
    assert context["ca"] == str(folder / "ca.pem") and context["url"] == lab.url
    key = (folder / "server-key.pem").read_text()
    shown = [repr(lab), lab._repr_html_(), repr(lab.server), json.dumps(lab.client_env())]
    assert all(key not in text and "PRIVATE KEY" not in text for text in shown)
    # Another lab, another CA: the first lab's CA does not open the second.
    stranger = ssl.create_default_context(cadata=Path(context["ca"]).read_text())
    other = fresh_lab(tls=True)
    with pytest.raises(TlsFailed, match="not signed by a CA this client trusts"):
        agentlab.Client.open(other.url, name="stranger", tls=stranger)


def test_a_client_trusting_a_foreign_ca_fails_verification_with_a_clear_error(fresh_lab):
    lab = fresh_lab(tls=True)
    foreign = trustme.CA()
    context = ssl.create_default_context()
    foreign.configure_trust(context)
    with pytest.raises(TlsFailed) as caught:
        agentlab.Client.open(lab.url, name="foreign", tls=context)
    text = str(caught.value)
    assert lab.url in text and "CERTIFICATE_VERIFY_FAILED" in text
    assert "ssl.create_default_context(cafile=CA)" in text and "AGENTLAB_NATS_CREDENTIALS" in text
    assert isinstance(caught.value, ConnectionError)  # a ServerUnreachable too
    with pytest.raises(ssl.SSLCertVerificationError):
        nats_py(lab.url, tls=context, **lab.login())
    # A server certificate from the foreign CA, for the right host, is refused as well:
    # the lab's clients trust the lab's CA, not whoever names 127.0.0.1.
    impostor = foreign.issue_cert("127.0.0.1", "localhost")
    with EmbeddedServer(name="impostor", anonymous=True,
                        extra_config=_tls_block(impostor)) as server:
        with pytest.raises(TlsFailed):
            agentlab.Client.open(server.url.replace("nats://", "tls://"), name="x",
                                 tls=lab.tls_context())


def _tls_block(cert: trustme.LeafCert) -> str:
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="agentlab-impostor-"))
    cert.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    cert.private_key_pem.write_to_path(folder / "key.pem")
    return f'tls {{\n  cert_file: "{folder}/cert.pem"\n  key_file: "{folder}/key.pem"\n}}\n'


def test_a_tls_url_to_a_plain_text_server_is_refused_not_downgraded(fresh_lab):
    lab = fresh_lab()  # plain text
    with pytest.raises(TlsFailed, match="does not ask for TLS"):
        agentlab.Client.open(lab.url.replace("nats://", "tls://"), name="promised")


def test_a_bad_tls_value_is_refused_naming_the_accepted_ones(fresh_lab):
    for bad in ("yes", "mTLS", 1, "TLS"):
        with pytest.raises(ValueError) as caught:
            fresh_lab(tls=bad)
        text = str(caught.value)
        assert repr(bad) in text and "'mutual'" in text and "True" in text
    with pytest.raises(ValueError, match="not a TLS mode"):
        EmbeddedServer(tls="on")
    assert tls_mode(True) == tls_mode("tls") == "tls" and tls_mode(False) is None


def test_tls_with_a_url_checks_that_server_asks_for_tls(fresh_lab):
    with EmbeddedServer(name="plain") as plain:
        with pytest.raises(ValueError, match="does not ask for TLS"):
            fresh_lab(url=plain.url, tls=True)
    with EmbeddedServer(name="secure", tls=True) as secure:
        outside = fresh_lab(url=secure.url, tls=True)
        assert outside.server is None and outside.tls_context() is not None
        assert outside.credentials_path is None  # this process runs it: no file given


# -- mutual TLS ---------------------------------------------------------------------------------
def test_mutual_tls_refuses_a_client_without_the_labs_certificate(fresh_lab):
    lab = fresh_lab(tls="mutual")
    files = lab.server.tls_files
    assert files is not None and files.cert is not None and files.key is not None
    assert files.key.stat().st_mode & 0o077 == 0
    context = json.loads(Path(lab.credentials_path).read_text())
    assert (context["ca"], context["cert"], context["key"]) == tuple(
        map(str, (files.ca, files.cert, files.key)))
    ca_only = ssl.create_default_context(cafile=str(files.ca))
    for attempt in range(5):  # the server's alert, or the reset that can overtake it: the same
        with pytest.raises(TlsFailed, match="requires a client certificate") as caught:
            agentlab.Client.open(lab.url, name=f"no-cert-{attempt}", tls=ca_only)
        assert "`cert` and `key`" in str(caught.value)
    # nats-py alone: the server ends the handshake (an alert, or the socket reset under it).
    with pytest.raises((ssl.SSLError, ConnectionError, nats.errors.Error)):
        nats_py(lab.url, tls=ca_only, **lab.login())
    # A client certificate of another CA is no better than none.
    foreign = trustme.CA().issue_cert("client.agentlab.example")
    with_foreign = ssl.create_default_context(cafile=str(files.ca))
    foreign.configure_cert(with_foreign)
    with pytest.raises(TlsFailed):
        agentlab.Client.open(lab.url, name="foreign-cert", tls=with_foreign)
    plain_text_is_refused(lab.url, lab.login())
    # When the connection reset overtakes the server's alert, the greeting tells instead.
    from agentlab.core.tls import requires_client_certificate

    assert asyncio.run(requires_client_certificate(lab.url)) is True
    message = str(TlsFailed(lab.url, None, closed_after_handshake=True))
    assert "requires a client certificate" in message and "`cert` and `key`" in message
    # With the lab's certificate: in.
    nats_py(lab.url, tls=lab.tls_context(), **lab.login())
    assert lab.connect("cto").identity == "agentlab"


def test_a_worker_process_joins_a_mutual_tls_lab_through_client_env(fresh_lab):
    from agentlab.programs.worker import WorkerProcess

    lab = fresh_lab(tls="mutual")
    declare_reference_streams(lab)
    org = f"org{uuid.uuid4().hex[:6]}"
    done = lab.subscribe(S.tasks_completed(org))
    argv = [sys.executable, "-m", "agentlab.programs.worker", "--role", "cto", "--org", org,
            "--instance", "cto-alone", "--handler", "agentlab.org.roles:cto_handler"]
    # Without the credentials file the worker does not trust the lab's CA: refused, and told.
    without = subprocess.run(argv, env=clean_env(AGENTLAB_NATS_URL=lab.url),
                             capture_output=True, text=True, timeout=60)
    assert without.returncode == 2 and "TLS" in without.stderr, without.stderr
    worker = WorkerProcess(lab.url, "cto", org=org, instance="cto-tls",
                           handler="agentlab.org.roles:cto_handler",
                           env=clean_env()).start(timeout=60)
    try:
        task = Task(org=org, role="cto", title="Pick a database", requested_by="ceo")
        lab.js.publish(S.tasks("cto"), task, msg_id=task.id)
        event = done.next(timeout=30).decode(TaskCompleted)
        assert (event.task_id, event.instance) == (task.id, "cto-tls")
    finally:
        worker.stop()


def test_the_tenant_audit_passes_over_mutual_tls():
    from agentlab.programs.tenant_audit import audit_models

    for report in audit_models(("accounts", "users"), tls="mutual"):
        assert report.ok, report.verdict
        assert len(report.cells) > 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a three-node cluster")
def test_cluster_3_with_mutual_tls_routes_and_clients_runs_an_organisation(fresh_lab):
    lab = fresh_lab(cluster=3, tls="mutual")
    cluster = lab.cluster
    assert cluster is not None and lab.replicas == 3
    assert all(url.startswith("tls://127.0.0.1:") for url in cluster.urls)
    for url in cluster.urls:
        plain_text_is_refused(url, lab.login())
        nats_py(url, tls=lab.tls_context(), **lab.login())
    for node in cluster.nodes.values():
        config = node.config_path.read_text()
        cluster_block = json.loads(next(line.split(": ", 1)[1] for line in config.splitlines()
                                        if line.startswith("cluster: ")))
        assert cluster_block["tls"]["ca_file"] == str(cluster.tls_files.ca)
        # The routes require TLS (verified both ways), and they are up.
        varz = node.varz()["cluster"]
        assert varz["tls_required"] is True and varz["tls_verify"] is True, varz
        assert node._monitor("routez")["num_routes"] >= 2
    org = Organisation(lab, f"org{uuid.uuid4().hex[:6]}", heartbeat_interval=0.5).start()
    try:
        done = lab.subscribe(S.tasks_completed(org.org))
        task = org.assign("Pick a database", to="cto")
        event = done.next(timeout=30).decode(TaskCompleted)
        assert (event.org, event.task_id) == (org.org, task.id)
    finally:
        org.stop()


# -- agentlab server --tls ------------------------------------------------------------------
def test_agentlab_server_tls_mutual_prints_how_to_connect_and_never_a_secret(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "agentlab", "server", "--store-dir",
                             str(tmp_path), "--tls", "mutual"], env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        while not lines or "Ctrl-C" not in lines[-1]:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
        text = "".join(lines)
        path = tmp_path / "credentials.json"
        context = json.loads(path.read_text())
        assert context["url"].startswith("tls://127.0.0.1:")
        assert context["password"] not in text
        for name in ("server-key.pem", "client-key.pem"):
            assert (tmp_path / "tls" / name).read_text() not in text
        assert "PRIVATE KEY" not in text
        assert f"export AGENTLAB_NATS_URL={context['url']}" in text
        assert f"export AGENTLAB_NATS_CREDENTIALS={path}" in text
        assert "--context agentlab" in text and context["ca"] in text and "mutual" in text
        # Another terminal: the two exports are all `agentlab status` needs, over mutual TLS.
        status = subprocess.run(
            [sys.executable, "-m", "agentlab", "status"], capture_output=True, text=True,
            timeout=60, env=clean_env(AGENTLAB_NATS_URL=context["url"],
                                      AGENTLAB_NATS_CREDENTIALS=str(path)))
        assert status.returncode == 0, status.stderr
        assert "Stream Report" in status.stdout
    finally:
        proc.terminate()
        proc.wait(15)


# -- certificates for a deployment ----------------------------------------------------------
def test_generated_certificates_name_the_hosts_and_nats_server_accepts_the_config(tmp_path):
    from cryptography import x509

    certs = LabCertificates.generate(tmp_path / "certs", mutual=True,
                                     hosts=["nats-1", "nats-2", "nats-3"], days=365)
    cert = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"nats-1", "nats-2", "nats-3", "localhost"} <= set(names.get_values_for_type(
        x509.DNSName))
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1",
                                                                               "::1"}
    config = tmp_path / "tls.conf"
    config.write_text(f"tls: {json.dumps(certs.server_settings())}\n"
                      "cluster { name: c\n port: -1\n tls: "
                      f"{json.dumps(certs.server_settings(verify=False))} }}\n")
    checked = subprocess.run([str(find_nats_server()), "-t", "-c", str(config)],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
