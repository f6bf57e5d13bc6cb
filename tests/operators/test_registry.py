"""Production registry set-ups: documented schemas, compatibility levels, look-up-only mode, TLS to the registry."""

from __future__ import annotations

import datetime
import io
import json
import os
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import fastavro
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connector.client import CommandPublisher
from connector.schemas import COMPATIBILITY, SCHEMA_NAMES, SchemaMissing, load_schema, subjects, sync_registry
from tests.support.env import free_port, settings_of
from tests.integration.test_schemas import _committed_versions

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_field_has_a_doc(name: str) -> None:
    assert _undocumented(load_schema(name)) == []


def test_result_status_has_no_accepted_and_reads_unknown_symbols_as_failed() -> None:
    status = next(f for f in load_schema("CommandResult")["fields"] if f["name"] == "status")["type"]
    assert status["symbols"] == ["SUCCEEDED", "FAILED"] and status["default"] == "FAILED"
    first = json.loads(_committed_versions("CommandResult")[0])  # the version that still had ACCEPTED
    record = {"command_id": "c", "conversation_ref": "r", "command_type": "SEND_MESSAGE", "status": "ACCEPTED",
              "processed_at": 0}
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(first), record)
    buffer.seek(0)
    read = fastavro.schemaless_reader(buffer, fastavro.parse_schema(first), fastavro.parse_schema(load_schema("CommandResult")))
    assert read["status"] == "FAILED"


@pytest.mark.parametrize("name", [name for name, level in COMPATIBILITY.items() if level == "FULL"])
def test_written_schemas_are_full_compatible_with_every_committed_version(name: str, registry: str, unique: str) -> None:
    subject = f"compat-full-{unique}-{name}"
    with httpx.Client(base_url=registry, timeout=10) as client:
        client.put(f"/config/{subject}", json={"compatibility": "FULL_TRANSITIVE"}).raise_for_status()
        for text in _committed_versions(name):
            response = client.post(f"/subjects/{subject}/versions", json={"schema": text})
            assert response.status_code == 200, f"committed history of {name} is not FULL compatible: {response.text}"
        verdict = client.post(f"/compatibility/subjects/{subject}/versions/latest", json={"schema": json.dumps(load_schema(name))})
        assert verdict.json()["is_compatible"] is True, f"{name} breaks FULL compatibility: {verdict.text}"
        client.delete(f"/subjects/{subject}")


@pytest.mark.kafka
def test_register_sets_each_subject_compatibility(settings_env: dict[str, str], registry: str) -> None:
    done = _connector(settings_env, "schemas", "register")
    assert done.returncode == 0, done.stderr
    settings = settings_of(settings_env)
    with httpx.Client(base_url=registry, timeout=10) as client:
        for name, subject in subjects(settings).items():
            assert f"{subject}: id " in done.stdout and f"compatibility {COMPATIBILITY[name]}" in done.stdout
            assert client.get(f"/config/{subject}").json()["compatibilityLevel"] == COMPATIBILITY[name]
    assert COMPATIBILITY["ConversationCommand"] == "BACKWARD"


@pytest.mark.kafka
def test_look_up_only_refuses_a_missing_subject_and_registers_nothing(
    settings_env: dict[str, str], registry: str, start_worker, tmp_path: Path
) -> None:
    env = {**settings_env, "CONNECTOR_SCHEMA_REGISTRY_AUTO_REGISTER": "false"}
    settings = settings_of(env)
    commands_subject = subjects(settings)["ConversationCommand"]
    with pytest.raises(SchemaMissing, match=f"not registered under {commands_subject} .*connector schemas register"):
        CommandPublisher(settings)

    worker = start_worker(env, wait_ready=False)
    assert worker.wait(60) == 2
    text = (tmp_path / "worker-0.log").read_text()
    assert "cannot start" in text and commands_subject in text and "CONNECTOR_SCHEMA_REGISTRY_AUTO_REGISTER=false" in text
    with httpx.Client(base_url=registry, timeout=10) as client:
        assert client.get(f"/subjects/{commands_subject}/versions").status_code == 404  # nothing was registered

    assert _connector(env, "schemas", "register").returncode == 0  # the pipeline's step
    with CommandPublisher(settings) as publisher:  # now found by look-up
        publisher.message("ref-1", "hello")
    with httpx.Client(base_url=registry, timeout=10) as client:
        assert len(client.get(f"/subjects/{commands_subject}/versions").json()) == 1


def test_registry_tls_uses_the_configured_ca_and_client_certificate(tmp_path: Path) -> None:
    ca, server, client = _pki(tmp_path)
    port = free_port()
    httpd = HTTPServer(("127.0.0.1", port), _Subjects)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    context.load_cert_chain(*server)
    context.verify_mode = ssl.CERT_REQUIRED
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"https://localhost:{port}"
    try:
        with_all = settings_of({"CONNECTOR_SCHEMA_REGISTRY_URL": url, "CONNECTOR_SCHEMA_REGISTRY_SSL_CAFILE": ca,
                                "CONNECTOR_SCHEMA_REGISTRY_SSL_CERTFILE": client[0], "CONNECTOR_SCHEMA_REGISTRY_SSL_KEYFILE": client[1]})
        assert sync_registry(with_all).get_subjects() == ["chat.commands-value"]
        no_client_cert = settings_of({"CONNECTOR_SCHEMA_REGISTRY_URL": url, "CONNECTOR_SCHEMA_REGISTRY_SSL_CAFILE": ca})
        with pytest.raises(httpx.HTTPError):
            sync_registry(no_client_cert).get_subjects()
        no_ca = settings_of({"CONNECTOR_SCHEMA_REGISTRY_URL": url})
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            sync_registry(no_ca).get_subjects()
    finally:
        httpd.shutdown()


class _Subjects(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(["chat.commands-value"]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _pki(directory: Path) -> tuple[str, tuple[str, str], tuple[str, str]]:
    """A CA, a server certificate for localhost and a client certificate, as PEM files."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256())
    )

    def issue(name: str, san: list[x509.GeneralName]) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(san), critical=False).sign(ca_key, hashes.SHA256())
        )
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return str(cert_path), str(key_path)

    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return str(ca_path), issue("localhost", [x509.DNSName("localhost")]), issue("connector", [x509.DNSName("connector")])


def _undocumented(schema: object, path: str = "") -> list[str]:
    if isinstance(schema, list):
        return [missing for branch in schema for missing in _undocumented(branch, path)]
    if not isinstance(schema, dict):
        return []
    if schema.get("type") == "record":
        found = []
        for field in schema["fields"]:
            where = f"{path}{schema['name']}.{field['name']}"
            found += [where] if not field.get("doc") else []
            found += _undocumented(field["type"], f"{where}/")
        return found
    if schema.get("type") == "array":
        return _undocumented(schema["items"], path)
    if schema.get("type") == "map":
        return _undocumented(schema["values"], path)
    return []


def _connector(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connector", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=90)
