"""``BRIDGE_NATS__*`` settings: defaults, validation naming the variable, secrets kept out."""

from pathlib import Path

import pytest

from config.errors import ConfigError
from config.settings import load_section
from sinks.nats.settings import NatsSettings

SECRET = "s3cr3t-n4ts"  # noqa: S105 - a test value that must never show


def test_defaults_are_a_local_server_and_one_subject() -> None:
    settings = load_section("nats", NatsSettings)
    assert settings.servers == ["nats://127.0.0.1:4222"]
    assert settings.template.name == b"etcd-bridge"
    assert settings.subject_filter == "etcd-bridge"
    assert settings.stream == "etcd-bridge"
    assert (settings.storage, settings.replicas, settings.max_age) == ("file", 1, 0.0)
    assert not settings.tls
    assert settings.authentication.startswith("no credentials")


def test_environment_variables_reach_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_NATS__SERVERS", "nats://a:4222, b.example:4223")
    monkeypatch.setenv("BRIDGE_NATS__SUBJECT", "etcd.{1}.{2}")
    monkeypatch.setenv("BRIDGE_NATS__STREAM", "CONFIG")
    monkeypatch.setenv("BRIDGE_NATS__STORAGE", "memory")
    monkeypatch.setenv("BRIDGE_NATS__REPLICAS", "3")
    monkeypatch.setenv("BRIDGE_NATS__MAX_AGE", "86400")
    monkeypatch.setenv("BRIDGE_NATS__USER", "bridge")
    monkeypatch.setenv("BRIDGE_NATS__PASSWORD", SECRET)
    settings = load_section("nats", NatsSettings)
    assert settings.servers == ["nats://a:4222", "nats://b.example:4223"]
    assert settings.subject_filter == "etcd.*.*"
    assert (settings.stream, settings.storage, settings.replicas) == ("CONFIG", "memory", 3)
    assert settings.max_age == 86400
    assert settings.authentication == "user 'bridge' (BRIDGE_NATS__USER/PASSWORD)"
    assert SECRET not in repr(settings) and SECRET not in str(settings)


def test_a_server_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as raised:
        load_section("nats", NatsSettings, servers=f"nats://app:{SECRET}@host:4222")
    assert str(raised.value).startswith("BRIDGE_NATS__SERVERS: server 1 holds credentials")
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize(
    ("servers", "problem"),
    [
        ("http://host:4222", "use a nats://"),
        ("nats://host:99999", "port is not a number"),
        ("nats://:4222", "has no host"),
        ("", "name at least one server"),
    ],
)
def test_bad_server_urls_name_the_variable(servers: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=f"^BRIDGE_NATS__SERVERS: .*{problem}"):
        load_section("nats", NatsSettings, servers=servers)


def test_tls_follows_the_scheme_or_a_ca_file(tmp_path: Path) -> None:
    assert load_section("nats", NatsSettings, servers="tls://host:4222").tls
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    assert load_section("nats", NatsSettings, ca_file=str(ca)).tls
    with pytest.raises(ConfigError, match="set both BRIDGE_NATS__CERT_FILE and"):
        load_section("nats", NatsSettings, cert_file=str(ca))


@pytest.mark.parametrize(
    ("credentials", "problem"),
    [
        ({"password": SECRET}, "set both BRIDGE_NATS__USER and BRIDGE_NATS__PASSWORD"),
        ({"user": "u"}, "set both BRIDGE_NATS__USER and BRIDGE_NATS__PASSWORD"),
        (
            {"user": "u", "password": SECRET, "token": SECRET},
            "authenticate one way: BRIDGE_NATS__USER/PASSWORD and BRIDGE_NATS__TOKEN",
        ),
    ],
)
def test_credentials_are_one_complete_method(credentials: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_section("nats", NatsSettings, **credentials)
    assert problem in str(raised.value)
    assert SECRET not in str(raised.value)


def test_token_and_files_describe_themselves_without_the_secret(tmp_path: Path) -> None:
    token = load_section("nats", NatsSettings, token=SECRET)
    assert token.authentication == "BRIDGE_NATS__TOKEN"
    assert SECRET not in repr(token)
    creds = tmp_path / "bridge.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----")
    described = load_section("nats", NatsSettings, credentials_file=str(creds)).authentication
    assert described == f"the credentials in {creds} (BRIDGE_NATS__CREDENTIALS_FILE)"
    with pytest.raises(ConfigError, match="^BRIDGE_NATS__NKEY_SEED_FILE: "):
        load_section("nats", NatsSettings, nkey_seed_file=str(tmp_path / "missing.nk"))


@pytest.mark.parametrize(
    ("subject", "problem"),
    [
        ("{1}.etcd", "the first token must be literal"),
        ("etcd..{1}", "token 2 is empty"),
        ("etcd.{1}.", "token 3 is empty"),
        ("etcd.*", "wildcard"),
        ("etcd.>", "wildcard"),
        ("etcd.a b", "whitespace or non-ASCII"),
        ("etcd.ключ", "whitespace or non-ASCII"),
        ("$JS.{1}", "belong to NATS itself"),
        ("etcd.{0}", "use {1} to {9}"),
        ("etcd." + "x" * 1100, "at most 1024 bytes"),
    ],
)
def test_a_subject_template_that_cannot_be_a_subject_is_refused(subject: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_section("nats", NatsSettings, subject=subject)
    message = str(raised.value)
    assert message.startswith("BRIDGE_NATS__SUBJECT: "), message
    assert problem in message
    assert "\n" not in message


def test_stream_subjects_must_capture_the_template() -> None:
    wide = load_section(
        "nats", NatsSettings, subject="etcd.{1}.{2}", stream_subjects="other,etcd.>"
    )
    assert wide.stream_subjects == ["other", "etcd.>"]
    with pytest.raises(ConfigError, match="must capture 'etcd.\\*.\\*'"):
        load_section("nats", NatsSettings, subject="etcd.{1}.{2}", stream_subjects="etcd.*")


def test_a_stream_name_nats_cannot_hold_is_refused() -> None:
    with pytest.raises(ConfigError, match="^BRIDGE_NATS__STREAM: "):
        load_section("nats", NatsSettings, stream="a.b")
