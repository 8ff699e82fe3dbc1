"""``BRIDGE_REDIS__*`` settings: validation, secrets kept out of messages, routing templates."""

from pathlib import Path

import pytest

from config.errors import ConfigError
from config.settings import load_section
from sinks.redis.settings import RedisMode, RedisSettings

SECRET = "s3cr3t-p4ss"  # noqa: S105 - a test value that must never show


def test_defaults_are_a_local_stream() -> None:
    settings = load_section("redis", RedisSettings)
    assert settings.mode is RedisMode.STREAM
    assert settings.template.name == b"etcd-bridge"
    assert settings.maxlen is None
    assert settings.safe_url == "redis://127.0.0.1:6379/0"


def test_environment_variables_reach_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_REDIS__URL", f"redis://app:{SECRET}@redis.example:6380/2")
    monkeypatch.setenv("BRIDGE_REDIS__MODE", "mirror")
    monkeypatch.setenv("BRIDGE_REDIS__MAXLEN", "1000")
    monkeypatch.setenv("BRIDGE_REDIS__MIRROR_KEY", "config:mirror")
    settings = load_section("redis", RedisSettings)
    assert settings.mode is RedisMode.MIRROR
    assert settings.maxlen == 1000
    assert settings.mirror_key == "config:mirror"
    assert settings.user == "app"
    assert settings.safe_url == "redis://app@redis.example:6380/2"


def test_the_password_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = RedisSettings(url=f"rediss://app:{SECRET}@host:6379/0")  # type: ignore[arg-type]
    for text in (
        repr(settings),
        str(settings),
        settings.safe_url,
        repr(load_section("redis", RedisSettings, url=f"redis://a:{SECRET}@h/0")),
    ):
        assert SECRET not in text
    monkeypatch.setenv("BRIDGE_REDIS__URL", f"http://app:{SECRET}@host:6379/0")
    with pytest.raises(ConfigError) as raised:
        load_section("redis", RedisSettings)
    assert "BRIDGE_REDIS__URL" in str(raised.value)
    assert SECRET not in str(raised.value)
    monkeypatch.setenv("BRIDGE_REDIS__URL", f"redis://app:{SECRET}@host:99999/0")
    with pytest.raises(ConfigError) as raised:
        load_section("redis", RedisSettings)
    assert SECRET not in str(raised.value)


def test_separate_credentials_win_over_the_url() -> None:
    settings = RedisSettings(
        url="redis://a:b@host/0",  # type: ignore[arg-type]
        username="writer",
        password=SECRET,  # type: ignore[arg-type]
    )
    assert settings.user == "writer"
    assert settings.safe_url == "redis://writer@host:6379/0"


def test_tls_files_need_rediss(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ConfigError, match="BRIDGE_REDIS__CA_FILE needs a rediss://"):
        load_section("redis", RedisSettings, url="redis://host/0", ca_file=str(ca))
    assert (
        load_section("redis", RedisSettings, url="rediss://host/0", ca_file=str(ca)).ca_file == ca
    )
    with pytest.raises(ConfigError, match="CERT_FILE and BRIDGE_REDIS__KEY_FILE"):
        load_section("redis", RedisSettings, url="rediss://host/0", cert_file=str(ca))


@pytest.mark.parametrize("value", ["0", "-5"])
def test_maxlen_keeps_at_least_one_entry(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_REDIS__MAXLEN", value)
    with pytest.raises(ConfigError, match="BRIDGE_REDIS__MAXLEN"):
        load_section("redis", RedisSettings)


def test_unknown_mode_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_REDIS__MODE", "queue")
    with pytest.raises(ConfigError, match="BRIDGE_REDIS__MODE"):
        load_section("redis", RedisSettings)


@pytest.mark.parametrize("bad", ["etcd:{0}", "etcd:{key}", "etcd:{1", "etcd:}", ""])
def test_malformed_templates_fail_naming_the_variable(
    bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_REDIS__STREAM", bad)
    with pytest.raises(ConfigError, match="BRIDGE_REDIS__STREAM"):
        load_section("redis", RedisSettings)
