"""Configuration: defaults, wrong values named by their variable, secrets that never print."""

from __future__ import annotations

import pytest

from connector.config import ConfigError, Generation, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CONNECTOR_"):
            monkeypatch.delenv(name)


def test_defaults_follow_the_architecture() -> None:
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.web_port == 6066
    assert settings.admin_port == 6067
    assert settings.platform_generation is Generation.CHAT_API_V2
    assert settings.platform_base_url == "https://api.8x8.com"
    assert settings.topics() == {
        "commands": "chat.commands",
        "command_results": "chat.command-results",
        "commands_dlq": "chat.commands.dlq",
        "events": "chat.events",
        "transcripts": "chat.transcripts",
        "webhooks_raw": "chat.webhooks.raw",
    }


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CONNECTOR_PLATFORM_GENERATION", "v3", "CONNECTOR_PLATFORM_GENERATION: Input should be 'chat-api-v2' or 'chat-gateway-v1'"),
        ("CONNECTOR_WEB_PORT", "70000", "CONNECTOR_WEB_PORT: Input should be less than or equal to 65535"),
        ("CONNECTOR_WEB_PORT", "http", "CONNECTOR_WEB_PORT: Input should be a valid integer"),
        ("CONNECTOR_KAFKA_PARTITIONS", "0", "CONNECTOR_KAFKA_PARTITIONS: Input should be greater than or equal to 1"),
        ("CONNECTOR_PLATFORM_REGION", "mars", "CONNECTOR_PLATFORM_REGION: 'mars' is not one of us, eu, ca, ap"),
        ("CONNECTOR_KAFKA_SECURITY_PROTOCOL", "TLS", "CONNECTOR_KAFKA_SECURITY_PROTOCOL: Input should be"),
        ("CONNECTOR_PLATFORM_BASE_URL", "api.8x8.com", "CONNECTOR_PLATFORM_BASE_URL: 'api.8x8.com' is not an http(s) URL"),
        ("CONNECTOR_LOG_LEVEL", "LOUD", "CONNECTOR_LOG_LEVEL: 'LOUD' is not one of"),
    ],
)
def test_a_wrong_value_names_the_variable_and_what_is_allowed(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert expected in str(info.value)


def test_plain_http_8x8_needs_an_explicit_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over http:// anyone on the path could swap the signing keys: the sandbox only, said out loud."""
    monkeypatch.setenv("CONNECTOR_PLATFORM_BASE_URL", "http://127.0.0.1:8088")
    with pytest.raises(ConfigError, match="CONNECTOR_PLATFORM_BASE_URL: 'http://127.0.0.1:8088' is not https://"):
        load_settings()
    monkeypatch.setenv("CONNECTOR_PLATFORM_ALLOW_INSECURE_HTTP", "true")
    assert load_settings().platform_base_url == "http://127.0.0.1:8088"


def test_webhook_body_limit_must_fit_a_kafka_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past it, a webhook would get 503 for ever (the producer refuses the record) and 8x8 retry it for ever."""
    monkeypatch.setenv("CONNECTOR_WEBHOOK_MAX_BODY_BYTES", "1048576")
    with pytest.raises(ConfigError, match="CONNECTOR_WEBHOOK_MAX_BODY_BYTES: 1048576 is more than 983040"):
        load_settings()
    monkeypatch.setenv("CONNECTOR_WEBHOOK_MAX_BODY_BYTES", "983040")
    assert load_settings().webhook_max_body_bytes == 983040


def test_admin_port_is_not_the_public_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_ADMIN_PORT", "6066")
    with pytest.raises(ConfigError, match="CONNECTOR_ADMIN_PORT: 6066 is also CONNECTOR_WEB_PORT"):
        load_settings()


def test_sasl_needs_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ConfigError, match="CONNECTOR_KAFKA_SASL_USERNAME and CONNECTOR_KAFKA_SASL_PASSWORD are required"):
        load_settings()


def test_sasl_scram_reaches_kafka_python_and_faust(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("CONNECTOR_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CONNECTOR_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("CONNECTOR_KAFKA_SASL_PASSWORD", "pw-123")
    settings = load_settings()
    config = settings.kafka_python_config()
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_password"] == "pw-123"
    credentials = settings.faust_broker_credentials()
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.username == "svc"


def test_secrets_never_print_and_come_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cr3t-from-file\n")
    monkeypatch.setenv("CONNECTOR_PLATFORM_API_KEY", "k3y-value")
    monkeypatch.setenv("CONNECTOR_PLATFORM_API_SECRET_FILE", str(secret_file))
    settings = load_settings()
    assert settings.platform_api_secret.get_secret_value() == "s3cr3t-from-file"
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert "k3y-value" not in shown and "s3cr3t-from-file" not in shown


def test_an_unreadable_secret_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("CONNECTOR_PLATFORM_API_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="CONNECTOR_PLATFORM_API_SECRET_FILE: cannot read"):
        load_settings()


def test_a_wrong_secret_value_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_WEB_PORT", "not-a-port-s3cr3t")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "s3cr3t" not in str(info.value)


def test_the_cli_exits_2_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from connector.cli import app

    monkeypatch.setenv("CONNECTOR_PLATFORM_GENERATION", "v3")
    result = CliRunner().invoke(app, ["topics", "create"])
    assert result.exit_code == 2
    assert "CONNECTOR_PLATFORM_GENERATION" in result.output


def test_every_field_is_documented() -> None:
    from connector.config import Settings

    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undocumented == []


def test_attachment_urls_reach_public_addresses_only_unless_networks_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    import ipaddress

    assert load_settings().command_attachment_allowed_networks == []
    monkeypatch.setenv("CONNECTOR_COMMAND_ATTACHMENT_ALLOWED_NETWORKS", " 127.0.0.0/8, ::1/128,")
    allowed = load_settings().command_attachment_allowed_networks
    assert allowed == [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    for wrong in ("localhost", "10.0.0.1/8"):  # a name; host bits set
        monkeypatch.setenv("CONNECTOR_COMMAND_ATTACHMENT_ALLOWED_NETWORKS", wrong)
        with pytest.raises(ConfigError, match="CONNECTOR_COMMAND_ATTACHMENT_ALLOWED_NETWORKS: value is not a valid"):
            load_settings()
