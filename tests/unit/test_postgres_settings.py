"""``BRIDGE_POSTGRES__*`` settings: validation, the password kept out of every message, names."""

from pathlib import Path

import pytest

from config.errors import ConfigError
from config.settings import load_section
from sinks.postgres.settings import PostgresMode, PostgresSettings, SslMode

SECRET = "s3cr3t-p4ss"  # noqa: S105 - a test value that must never show


def test_defaults_are_a_local_changelog() -> None:
    settings = load_section("postgres", PostgresSettings)
    assert settings.mode is PostgresMode.CHANGELOG
    assert settings.safe_dsn == "postgresql://postgres@127.0.0.1:5432/postgres"
    assert settings.table("changelog") == "etcd_bridge_changelog"
    assert settings.schema_name == "public"
    assert settings.sslmode is None


def test_environment_variables_reach_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_POSTGRES__DSN", f"postgresql://app:{SECRET}@db.example:6432/cfg")
    monkeypatch.setenv("BRIDGE_POSTGRES__MODE", "mirror")
    monkeypatch.setenv("BRIDGE_POSTGRES__SCHEMA_NAME", "etcd")
    monkeypatch.setenv("BRIDGE_POSTGRES__TABLE_PREFIX", "cfg_")
    monkeypatch.setenv("BRIDGE_POSTGRES__SSLMODE", "verify-full")
    monkeypatch.setenv("BRIDGE_POSTGRES__TIMEOUT", "2.5")
    settings = load_section("postgres", PostgresSettings)
    assert settings.mode is PostgresMode.MIRROR
    assert settings.table("mirror") == "cfg_mirror"
    assert settings.schema_name == "etcd"
    assert settings.sslmode is SslMode.VERIFY_FULL
    assert settings.timeout == 2.5
    assert settings.user == "app"
    assert settings.safe_dsn == "postgresql://app@db.example:6432/cfg"


def test_the_password_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    url = load_section("postgres", PostgresSettings, dsn=f"postgresql://a:{SECRET}@h/d")
    pairs = load_section(
        "postgres", PostgresSettings, dsn=f"host=h1,h2 port=1,2 user=a password={SECRET}"
    )
    for text in (repr(url), str(url), url.safe_dsn, repr(pairs), pairs.safe_dsn):
        assert SECRET not in text
    assert pairs.safe_dsn == "postgresql://a@h1:1,h2:2/a"
    # libpq's own parse error quotes the text around the mistake: here, the password.
    for broken, problem in [
        (f"host=h password={SECRET} trailing", "not a valid libpq connection string"),
        (f"postgresql://a:{SECRET}@h:port/d", "the port is not a number"),
    ]:
        monkeypatch.setenv("BRIDGE_POSTGRES__DSN", broken)
        with pytest.raises(ConfigError) as raised:
            load_section("postgres", PostgresSettings)
        assert f"BRIDGE_POSTGRES__DSN: {problem}" in str(raised.value)
        assert SECRET not in str(raised.value)


def test_separate_settings_win_over_the_dsn(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = load_section(
        "postgres",
        PostgresSettings,
        dsn="postgresql://a:old@h/d?sslmode=disable&application_name=mine",
        password=SECRET,
        sslmode="verify-ca",
        ca_file=str(ca),
    )
    options = settings.connection_options(application_name="etcd-bridge:p")
    assert options["password"] == SECRET
    assert options["sslmode"] == "verify-ca"
    assert options["sslrootcert"] == str(ca)
    assert options["application_name"] == "mine"
    default = load_section("postgres", PostgresSettings)
    assert default.connection_options(application_name="etcd-bridge:p") == {
        "connect_timeout": 10,
        "application_name": "etcd-bridge:p",
    }


def test_tls_files_need_tls_and_come_in_pairs(tmp_path: Path) -> None:
    pem = tmp_path / "file.pem"
    pem.write_text("x")
    with pytest.raises(ConfigError, match="BRIDGE_POSTGRES__CA_FILE needs TLS"):
        load_section("postgres", PostgresSettings, sslmode="disable", ca_file=str(pem))
    with pytest.raises(ConfigError, match="BRIDGE_POSTGRES__CA_FILE needs TLS"):
        load_section("postgres", PostgresSettings, dsn="host=h sslmode=disable", ca_file=str(pem))
    with pytest.raises(ConfigError, match="CERT_FILE and BRIDGE_POSTGRES__KEY_FILE"):
        load_section("postgres", PostgresSettings, cert_file=str(pem))
    with pytest.raises(ConfigError, match="BRIDGE_POSTGRES__SSLMODE"):
        load_section("postgres", PostgresSettings, sslmode="sometimes")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TABLE_PREFIX", "Etcd_"),  # would need quotes
        ("TABLE_PREFIX", "1etcd_"),
        ("TABLE_PREFIX", "etcd-bridge_"),
        ("TABLE_PREFIX", "x" * 51),  # <prefix>changelog_key over 63 bytes: truncated
        ("SCHEMA_NAME", "etcd; DROP"),
        ("SCHEMA_NAME", ""),
        ("SCHEMA_NAME", "s" * 64),
    ],
)
def test_names_postgresql_would_truncate_or_need_quoting_are_refused(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"BRIDGE_POSTGRES__{variable}", value)
    with pytest.raises(ConfigError, match=f"BRIDGE_POSTGRES__{variable}") as raised:
        load_section("postgres", PostgresSettings)
    assert "\n" not in str(raised.value)


def test_the_longest_prefix_that_fits_is_accepted() -> None:
    settings = load_section("postgres", PostgresSettings, table_prefix="x" * 50)
    assert len(settings.table("changelog") + "_key") == 63


@pytest.mark.parametrize("variable", ["TIMEOUT", "CONNECT_TIMEOUT"])
def test_timeouts_are_positive(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"BRIDGE_POSTGRES__{variable}", "0")
    with pytest.raises(ConfigError, match=f"BRIDGE_POSTGRES__{variable}"):
        load_section("postgres", PostgresSettings)
